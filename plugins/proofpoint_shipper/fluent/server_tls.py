"""The relay's TLS context: its certificate and private key, the key's passphrase from a file or
the environment, never asked for.

Without a passphrase callback, OpenSSL asks for one on the terminal when the key is encrypted:
the relay then waits for an answer no one gives (a service with a terminal, `docker run -it`), or
reads nothing and fails with "Invalid argument", naming the certificate.
"""

import ssl
from pathlib import Path

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.service import env_value, read_secret

PASSWORD_ENV = "PPSHIP_TLS_KEY_PASSWORD"


def server_tls(cert: Path | None, key: Path | None, password_file: Path | None) -> ssl.SSLContext | None:
    """The context for --tls-cert, --tls-key and --tls-key-password-file; None without TLS."""
    if cert is None:
        for flag, value in (("--tls-key", key), ("--tls-key-password-file", password_file)):
            if value is not None:
                raise ConfigError(f"{flag} needs --tls-cert")
        return None
    password = _password(password_file)
    files = f"{cert} and {key}" if key else str(cert)

    def give_password() -> str:
        if password is None:
            raise ConfigError(
                f"the private key in {key or cert} is encrypted: give its passphrase in "
                f"--tls-key-password-file or ${PASSWORD_ENV}"
            )
        return password

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        tls.load_cert_chain(cert, key, password=give_password)
    except ssl.SSLError:
        unlocked = ", or the passphrase does not open the key" if password is not None else ""
        raise ConfigError(f"{files}: not a PEM certificate with its private key{unlocked}") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the TLS certificate or key: {exc.filename or cert}: {exc.strerror}"
        ) from None
    return tls


def _password(path: Path | None) -> str | None:
    if path is not None:
        return read_secret(path, "the TLS key password file")
    return env_value(PASSWORD_ENV) or None  # without the newline `echo` leaves
