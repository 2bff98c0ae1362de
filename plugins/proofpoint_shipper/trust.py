"""A server certificate we do not trust: told at once with what to do, never retried.

Retrying cannot make a certificate trusted, so the collectors stop with one line. The common
cause is a proxy that re-signs TLS with a company CA; the clients take that CA from the
environment (httpx and websockets from SSL_CERT_FILE, botocore from AWS_CA_BUNDLE).
"""

import os
import ssl
from pathlib import Path

from proofpoint_shipper.errors import ConfigError

CA_VARIABLE = "SSL_CERT_FILE"  # read by httpx (the TAP API) and by OpenSSL (websockets: PoD)
BOTO_CA_VARIABLE = "AWS_CA_BUNDLE"  # botocore (S3) ships its own bundle and reads this instead


def check_ca_bundle() -> None:
    """A ConfigError now when SSL_CERT_FILE is set but holds no CA bundle we can load.

    httpx failed on it with a bare "Is a directory" or OpenSSL's words, naming nothing; OpenSSL
    under websockets ignores it, and the server then looks untrusted although the variable is set.
    """
    path = os.environ.get(CA_VARIABLE)
    if path:
        verifying_context(path, f"{CA_VARIABLE}={path}")


def verifying_context(ca_file: str | None, what: str) -> ssl.SSLContext:
    """A client TLS context that trusts `ca_file` (None: the system's CAs); a ConfigError naming
    `what` (the flag or variable and the file) when the file holds no CA bundle we can load.
    OpenSSL's own error names no file: "No such file or directory", "Is a directory"."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError whose words are in str()
        reason = str(exc) if isinstance(exc, ssl.SSLError) else exc.strerror or str(exc)
        raise ConfigError(f"{what} cannot be used as a CA bundle: {reason}") from None


def agent_tls(enabled: bool, ca_file: Path | None, flag: str) -> ssl.SSLContext | None:
    """TLS towards an agent's forward input, asked for by its switch or by naming the CA to verify
    the agent with (`flag`, e.g. --forward-ca); None for plain TCP."""
    if not (enabled or ca_file):
        return None
    ca = str(ca_file) if ca_file else None
    return verifying_context(ca, f"{flag} {ca}" if ca else "the system's CAs")


def untrusted_certificate(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind a client library's error (wrapped a few times), if any."""
    for _ in range(8):  # libraries wrap it two or three deep; a loop in the chain ends here
        if exc is None or isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def what_to_do(variable: str) -> str:
    return f"if a proxy on this network re-signs TLS, set {variable} to a CA bundle that holds its CA"


def not_trusted(server: str, failure: ssl.SSLCertVerificationError) -> ConfigError:
    return ConfigError(
        f"{server} presented a certificate we do not trust ({failure.verify_message}); "
        + what_to_do(CA_VARIABLE)
    )
