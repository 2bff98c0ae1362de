"""A server certificate we do not trust stops a collector at once, in one line that names the
variable to set (the usual cause: a proxy that re-signs TLS); that variable then works."""

import ssl

import pytest

from proofpoint_shipper.trust import untrusted_certificate
from tests.certificates import https_server
from tests.conftest import one_error_line, run_ppship

SECRETS = (b"tap-secret-value", b"pod-token-value")
CREDENTIALS = {"TAP_PRINCIPAL": "principal", "TAP_SECRET": "tap-secret-value", "POD_TOKEN": "pod-token-value"}
AWS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def untrusted(tmp_path):
    with https_server(tmp_path) as (url, certificate):
        yield url, certificate


def tap_fetch(url: str, tmp_path, **env: str):
    cursor = str(tmp_path / "cursor.json")
    flags = ["--once", "--base-url", url, "--cursor", cursor, "--output", "stdout"]
    return run_ppship("tap", "fetch", *flags, env={**CREDENTIALS, **env}, timeout=60)


def test_tap_fetch_stops_at_once_and_names_ssl_cert_file(untrusted, tmp_path):
    url, _ = untrusted
    result = tap_fetch(url, tmp_path)
    error = one_error_line(result)
    assert f"the TAP API at {url} presented a certificate we do not trust (self-signed" in error
    assert "set SSL_CERT_FILE to a CA bundle" in error
    assert b"retry" not in result.stderr  # retrying cannot make it trusted
    assert not any(secret in result.stderr for secret in SECRETS)


def test_tap_fetch_trusts_the_bundle_ssl_cert_file_names(untrusted, tmp_path):
    url, certificate = untrusted
    result = tap_fetch(url, tmp_path, SSL_CERT_FILE=str(certificate))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"1 windows, 0 new events" in result.stderr


def test_pod_stream_stops_at_once_and_names_ssl_cert_file(untrusted, tmp_path):
    url, _ = untrusted
    stream = url.replace("https://", "wss://") + "/v1/stream"
    flags = ["--type", "message", "--cluster-id", "c1", "--url", stream, "--output", "stdout"]
    result = run_ppship("pod", "stream", *flags, "--cursor", str(tmp_path / "pod.json"), env=CREDENTIALS)
    error = one_error_line(result)
    assert f"the PoD log API at {stream} presented a certificate we do not trust" in error
    assert "set SSL_CERT_FILE" in error and b"reconnect" not in result.stderr
    assert not any(secret in result.stderr for secret in SECRETS)


def test_s3_names_aws_ca_bundle(untrusted):
    url, _ = untrusted
    result = run_ppship("s3", "check", "--bucket", "lake", "--endpoint-url", url, env=AWS)
    assert "set AWS_CA_BUNDLE to a CA bundle that holds its CA" in one_error_line(result)


def test_doctor_names_the_variable_for_each_source(untrusted):
    url, _ = untrusted
    stream = url.replace("https://", "wss://") + "/v1/stream"
    flags = ["--tap-base-url", url, "--pod-url", stream, "--pod-cluster-id", "c1"]
    flags += ["--bucket", "lake", "--endpoint-url", url]
    result = run_ppship("doctor", *flags, env={**CREDENTIALS, **AWS})
    failed = {
        line.split()[1]: line for line in result.stdout.decode().splitlines() if line.startswith("FAIL")
    }
    assert result.returncode == 1
    assert "certificate we do not trust" in failed["tap"] and "SSL_CERT_FILE" in failed["tap"]
    assert "certificate we do not trust" in failed["pod"] and "SSL_CERT_FILE" in failed["pod"]
    assert "AWS_CA_BUNDLE" in failed["s3"]


def test_only_a_certificate_failure_is_taken_for_one():
    failure = ssl.SSLCertVerificationError("certificate verify failed")
    try:
        try:
            raise failure
        except ssl.SSLError as inner:
            raise ConnectionError("wrapped") from inner
    except ConnectionError as outer:
        assert untrusted_certificate(outer) is failure
    assert untrusted_certificate(ConnectionRefusedError()) is None
    assert untrusted_certificate(ssl.SSLError("no shared cipher")) is None
    looped = OSError("a")
    looped.__context__ = OSError("b")
    looped.__context__.__context__ = looped
    assert untrusted_certificate(looped) is None  # a chain that loops ends


@pytest.mark.parametrize(
    "bundle, reason",
    [
        ("missing.pem", "No such file or directory"),
        ("", "Is a directory"),  # the folder itself
        ("notes.txt", "NO_CERTIFICATE_OR_CRL_FOUND"),
    ],
    ids=["missing", "a folder", "no certificate in it"],
)
def test_an_ssl_cert_file_that_holds_no_ca_bundle_is_named(untrusted, tmp_path, bundle, reason):
    """httpx failed with a bare "Is a directory" or OpenSSL's words, naming nothing; OpenSSL under
    websockets ignored it, and the server then looked untrusted although SSL_CERT_FILE was set."""
    url, _ = untrusted
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    path = tmp_path / bundle if bundle else tmp_path
    stream = url.replace("https://", "wss://") + "/v1/stream"
    pod = ["pod", "stream", "--type", "message", "--cluster-id", "c1", "--url", stream]
    for command in (["tap", "fetch", "--base-url", url], pod):
        cursor = ["--cursor", str(tmp_path / f"{command[0]}.json")]
        result = run_ppship(*command, *cursor, env={**CREDENTIALS, "SSL_CERT_FILE": str(path)}, timeout=60)
        error = one_error_line(result)
        assert error.startswith(f"ppship: error: SSL_CERT_FILE={path} cannot be used as a CA bundle: "), error
        assert reason in error
