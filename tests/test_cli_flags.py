"""Flags with impossible values stop every command at start-up with exit code 2: one error line
(argparse's usage may stand above it), never a traceback, never a start that fails later."""

import argparse
import re
import socket
from pathlib import Path

import pytest

from proofpoint_shipper.bucket.layout import key_prefix
from proofpoint_shipper.cli import COMMANDS, build_parser
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.service import host_and_port
from tests.conftest import run_ppship

UPSTREAM = ["--upstream", "127.0.0.1:24225"]
TABLE = ("--table", "proofpoint_tap_clicks_blocked")
REFUSED = [
    (["relay", "--workers", "0", *UPSTREAM], b"--workers: expected a positive whole number"),
    (["relay", "--max-frame-bytes", "-1", *UPSTREAM], b"--max-frame-bytes: expected a positive"),
    (["relay", "--max-in-flight-bytes", "0", *UPSTREAM], b"--max-in-flight-bytes: expected a positive"),
    (["relay", "--drain-seconds", "-5", *UPSTREAM], b"--drain-seconds: expected a number of seconds"),
    (["relay", "--upstream-timeout", "nan", *UPSTREAM], b"--upstream-timeout: expected a number of"),
    (["relay", "--assemble", "--idle-timeout", "nan", *UPSTREAM], b"--idle-timeout: expected a number"),
    (["relay", "--assemble", "--max-open", "0", *UPSTREAM], b"--max-open: expected a positive whole number"),
    # the assembler's flags alone would be ignored
    (["relay", "--idle-timeout", "60", *UPSTREAM], b"--idle-timeout is for --assemble, which is not given"),
    (["relay", "--max-open", "10", "--workers", "2", *UPSTREAM], b"--max-open is for --assemble"),
    (["relay", "--upstream", "127.0.0.1:99999"], b"--upstream wants HOST:PORT (port 1-65535)"),
    (["relay", "--listen", "127.0.0.1:65536", *UPSTREAM], b"--listen wants HOST:PORT (port 0-65535)"),
    # port 0 is "any free port" to a listener; connecting to it can only fail, on every retry
    (["relay", "--upstream", "[::1]:0"], b"--upstream wants HOST:PORT (port 1-65535), got '[::1]:0'"),
    (
        ["ship", "--table", "proofpoint_tap_clicks_permitted", "--output", "forward", "--forward", "h:0"],
        b"--forward wants HOST:PORT (port 1-65535), got 'h:0'",
    ),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--flush-records", "0"], b"--flush-records"),
    (
        ["ship", "--table", "proofpoint_tap_clicks_permitted", "--output", "forward", "--forward", "h:99999"],
        b"--forward wants HOST:PORT (port 1-65535)",
    ),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--batch-age", "0"], b"seconds above 0"),
    (
        ["ship", "--table", "proofpoint_tap_clicks_permitted", "--flush-seconds", "nan"],
        b"--flush-seconds: expected",
    ),
    (
        ["gateway", "parse", "--follow", "x", "--rotate-wait", "-1"],
        b"--rotate-wait: expected a number of seconds",
    ),
    (["ship", "--table", "proofpoint_tap_clicks_permitted", "--batch-bytes", "1e6"], b"--batch-bytes"),
    (["gateway", "parse", "--reference-time", "0001-01-01T00:00:00+14:00"], b"between the years 1900 and"),
    (["gateway", "assemble", "--max-open", "0"], b"--max-open: expected a positive whole number"),
    # a header's host is one word: "" or "mx 1" would write text lines that do not read back
    (["gateway", "parse", "--host", ""], b"--host: expected a host name without white space, got ''"),
    (["gateway", "assemble", "--host", "mx 1"], b"--host: expected a host name without white space"),
    # botocore builds "https://s3..amazonaws.com" from an empty region and raised a traceback
    (
        ["ship", *TABLE, "--output", "s3", "--bucket", "b", "--region", ""],
        b"--region: expected an AWS region",
    ),
    (["doctor", "--bucket", "b", "--region", "us east 1"], b"--region: expected an AWS region such as"),
    (["s3", "check", "--bucket", "b", "--region=-x"], b"--region: expected an AWS region"),
    # no record holds the line under "": every one would come back with an error
    (["gateway", "exec-filter", "--key", ""], b"--key: expected the name of a record key, got ''"),
    (["relay", *UPSTREAM, "--key", "log", "--key", ""], b"--key: expected the name of a record key"),
    # keys the data lake would not find: refused before anything is written
    (["ship", *TABLE, "--output", "s3", "--prefix", "lake//x"], b"'lake//x': an empty folder between two"),
    (["s3", "check", "--bucket", "b", "--prefix", "../lake"], b"'../lake': a '..' folder"),
    (["doctor", "--prefix", "lake/ x"], b"the folder ' x' has white space around it"),
    (["gateway", "assemble", "--idle-timeout", "-1"], b"--idle-timeout: expected a number of seconds"),
    (["gateway", "assemble", "--idle-timeout", "inf"], b"--idle-timeout: expected a number of seconds"),
    (["tap", "fetch", "--since", "2999-01-01T00:00:00Z"], b"--since: --since 2999-01-01T00:00:00Z is in the"),
    (["tap", "fetch", "--since", "169h"], b"--since: --since reaches further back than the API's 7 days"),
    (["tap", "fetch", "--lag", "1e400"], b"--lag: not a duration of 0 or more"),
    (["tap", "fetch", "--lookback=-5m"], b"--lookback: not a duration of 0 or more"),
    (["tap", "fetch", "--follow", "--interval", "0"], b"--interval: a polling period must be above 0"),
    # a flag of --follow alone would be ignored
    (["tap", "fetch", "--interval", "5m"], b"--interval needs --follow: without it, one catch-up run"),
    (["gateway", "parse", "--rotate-wait", "3"], b"--rotate-wait needs --follow"),
    (["gateway", "parse", "--rotated-dir", "old"], b"--rotated-dir needs --follow"),
    (["pod", "stream", "--type", "message", "--since", "2999-01-01"], b"is in the future"),
    (
        ["pod", "stream", "--type", "message", "--since", "2022-01-02", "--until", "2022-01-01"],
        b"--until must be later than --since",
    ),
    (["relay", "--tls-key", "key.pem", *UPSTREAM], b"--tls-key needs --tls-cert"),
    (["pod", "stream", "--type", "message", "--duration", "-1"], b"--duration: expected a number"),
    (["pod", "stream", "--type", "message", "--max-events", "0"], b"--max-events: expected a positive"),
    (["s3", "check", "--bucket", "b", "--sample", "0"], b"--sample: expected a positive"),
    (["s3", "check", "--bucket", "b", "--endpoint-url", "localhost:9000"], b"--endpoint-url: not a https://"),
    (
        ["ship", "--table", "proofpoint_tap_clicks_permitted", "--endpoint-url", "s3"],
        b"--endpoint-url: not a",
    ),
    # botocore's message (an ARN it does not read) spans lines: it still comes out as one
    (
        ["s3", "check", "--bucket", "arn:aws:s3:bad", "--endpoint-url", "http://127.0.0.1:9"],
        b"Invalid bucket name",
    ),
    (["doctor", "--tap-base-url", "http://[::1"], b"--tap-base-url: not a https:// or http:// URL"),
    (["tap", "fetch", "--base-url", "https://tap:99999"], b"--base-url: not a https:// or http:// URL"),
    (["pod", "stream", "--type", "message", "--url", "wss://:443/v1"], b"--url: not a wss:// or ws:// URL"),
    (["doctor", "--max-clock-skew", "-1"], b"--max-clock-skew: expected a number of seconds"),
    (["dev", "s3", "--port", "99999"], b"--port: not a port number (0-65535)"),
    (["simulate", "tap", "--port", "99999"], b"--port: not a port number (0-65535)"),
    (["simulate", "tap", "--days", "nan"], b"--days: expected a number above 0"),
    (["simulate", "tap", "--days", "1e9"], b"--days: expected at most 3650 days"),
    (["simulate", "tap", "--fail-rate", "2"], b"--fail-rate: expected a share from 0 to 1"),
    (["simulate", "tap", "--quota", "-1"], b"--quota: expected a whole number"),
    (["simulate", "tap", "--slow", "inf"], b"--slow: expected a number of seconds"),
    (["simulate", "pod", "--rate", "0"], b"--rate: expected a number above 0"),
    (["simulate", "pod", "--days", "inf"], b"--days: expected a number above 0"),
    (["simulate", "pod", "--resend-rate", "nan"], b"--resend-rate: expected a share from 0 to 1"),
    (["simulate", "pod", "--drop-every", "0"], b"--drop-every: expected a positive whole number"),
    (
        ["ship", *TABLE, "--output", "s3", "--batch-bytes", "6000000000"],
        b"over S3's 5 GiB limit for one upload",
    ),
    (
        ["ship", *TABLE, "--output", "s3", "--bucket", "s3://lake"],
        b"--bucket: give the bucket's name without s3://",
    ),
    (["s3", "check", "--bucket", "lake/logs"], b"a bucket name holds no '/'; folders go in --prefix"),
    (["doctor", "--bucket", "my lake"], b"--bucket: expected a bucket name, got 'my lake'"),
    (["s3", "setup", "--bucket", "lake:logs"], b"--bucket: expected a bucket name, got 'lake:logs'"),
    # An empty path, as an unset variable in an agent's command line gives, named the working folder.
    (["ship", *TABLE, "--output", "s3", "--spool-dir", ""], b"--spool-dir: expected a path, got ''"),
    (["pod", "stream", "--type", "message", "--dead-letter-dir", ""], b"--dead-letter-dir: expected a path"),
    (["tap", "fetch", "--dead-letter-dir", ""], b"--dead-letter-dir: expected a path, got ''"),
    (["gateway", "parse", "--position-file", "", "x.log"], b"--position-file: expected a path, got ''"),
    (["relay", "--tls-cert", ""], b"--tls-cert: expected a path, got ''"),
]


@pytest.mark.parametrize(
    "args, message", REFUSED, ids=[" ".join(a for a in args if a not in UPSTREAM) for args, _ in REFUSED]
)
def test_an_impossible_value_is_one_line_and_exit_2(args, message):
    result = run_ppship(*args)
    assert result.returncode == 2
    *_, last = result.stderr.splitlines()
    assert message in last and last.startswith(b"ppship"), result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_unusable_files_and_addresses_are_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("TAP_PRINCIPAL", "principal")
    monkeypatch.setenv("TAP_SECRET", "secret")
    monkeypatch.setenv("POD_TOKEN", "token")
    monkeypatch.setenv("POD_CLUSTER_ID", "cluster")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a certificate\n")
    tap_cursor, pod_cursor = tmp_path / "tap.json", tmp_path / "pod.json"  # each given to another command
    tap_cursor.write_text('{"cursor": "2026-01-01T00:00:00+00:00", "pending": [], "seen": {}}')
    pod_cursor.write_text('{"last_ts": null, "recent": []}')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for args, message in (
            (["relay", "--tls-cert", str(a_file), *UPSTREAM], b"not a PEM certificate with its private key"),
            (["relay", "--tls-cert", str(tmp_path / "gone.pem"), *UPSTREAM], b"No such file or directory"),
            (
                ["ship", *TABLE, "--output", "forward", "--forward-ca", str(tmp_path / "gone.pem")],
                f"--forward-ca {tmp_path / 'gone.pem'} cannot be used as a CA bundle: No such file".encode(),
            ),
            (
                [
                    "tap",
                    "fetch",
                    "--output",
                    "forward",
                    "--forward-ca",
                    str(a_file),
                    "--cursor",
                    str(tap_cursor),
                ],
                f"--forward-ca {a_file} cannot be used as a CA bundle: [X509: NO_CERTIFICATE".encode(),
            ),
            (["relay", "--listen", busy, *UPSTREAM], f"cannot listen on {busy}: ".encode()),
            (["relay", "--listen", "256.0.0.1:0", *UPSTREAM], b"cannot listen on 256.0.0.1:0: "),
            (
                ["gateway", "parse", "--follow", str(a_file), "--position-file", str(tmp_path)],
                f"position file {tmp_path} is a folder: name a file in it".encode(),
            ),
            (
                ["gateway", "parse", "--follow", str(tmp_path / "log"), "--rotated-dir", str(a_file)],
                f"--rotated-dir {a_file} is not a directory".encode(),
            ),
            # the stand-ins bind in threads of their own: a traceback there, or (moto) a start that waits
            (["simulate", "tap", "--port", busy.split(":")[1]], f"cannot listen on {busy}: ".encode()),
            (["simulate", "pod", "--port", busy.split(":")[1]], f"cannot listen on {busy}: ".encode()),
            # an address not on this host, with any free port: the server's thread failed, and it waited
            (["simulate", "pod", "--host", "192.0.2.1"], b"cannot listen on 192.0.2.1:0: Cannot assign"),
            (["dev", "s3", "--port", busy.split(":")[1]], f"cannot listen on {busy}: ".encode()),
            (["simulate", "tap", "--replay", str(a_file)], f"{a_file}:1: invalid literal".encode()),
            (["simulate", "tap", "--replay", str(tmp_path / "gone")], b"No such file or directory"),
            (
                ["tap", "fetch", "--once", "--base-url", "http://127.0.0.1:9", "--cursor", str(pod_cursor)],
                f"cursor file {pod_cursor} holds last_ts, recent, which this command never".encode(),
            ),
            (
                [
                    "pod",
                    "stream",
                    "--type",
                    "message",
                    "--url",
                    "ws://127.0.0.1:9/v1/stream",
                    "--cursor",
                    str(tap_cursor),
                ],
                f"cursor file {tap_cursor} holds cursor, pending, seen, which this command never".encode(),
            ),
            (
                ["gateway", "parse", "--follow", str(a_file), "--position-file", str(tap_cursor)],
                f"position file {tap_cursor} holds cursor, pending, seen, which this command never".encode(),
            ),
            (
                ["tap", "fetch", "--cursor", str(tmp_path / "c.json"), "--dead-letter-dir", str(a_file)],
                f"the dead-letter folder {a_file} is a file, not a folder".encode(),
            ),
            (
                [
                    *("pod", "stream", "--type", "maillog", "--cursor", str(tmp_path / "p.json")),
                    *("--dead-letter-dir", str(a_file / "below")),
                ],
                b"cannot create the dead-letter folder",
            ),
        ):
            result = run_ppship(*args, timeout=30)
            assert result.returncode == 2, (args, result.stderr.decode())
            assert result.stderr.count(b"\n") == 1 and message in result.stderr, result.stderr.decode()
            assert b"Unknown error" not in result.stderr  # an errno that is not the OS's, read as one


SECRET_FILE_FLAGS = [
    (["tap", "fetch", "--once", "--secret-file"], "the secret file"),
    (["pod", "stream", "--type", "message", "--cluster-id", "c", "--token-file"], "the token file"),
    (["relay", *UPSTREAM, "--shared-key-file"], "the shared key file"),
    (["ship", "--output", "forward", *TABLE, "--shared-key-file"], "the shared key file"),
    (["relay", *UPSTREAM, "--tls-cert", "cert.pem", "--tls-key-password-file"], "the TLS key password file"),
]


@pytest.mark.parametrize("command, what", SECRET_FILE_FLAGS, ids=[c[0] for c, _ in SECRET_FILE_FLAGS])
@pytest.mark.parametrize(
    "content, fault",
    [
        (b"\xff\xfe-key", "is not UTF-8 text"),
        (b" \n", "is empty"),  # a secret not mounted yet: never an empty key
        (b"k" * (64 * 1024 + 1), "is over 64 KiB: not a secret"),
    ],
    ids=["not-utf8", "empty", "huge"],
)
def test_an_unusable_secret_file_is_one_line_and_exit_2(command, what, content, fault, tmp_path, monkeypatch):
    monkeypatch.setenv("TAP_PRINCIPAL", "principal")
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    cursor = ["--cursor", str(tmp_path / "c.json")] if command[0] in ("tap", "pod") else []
    result = run_ppship(*command, str(secret), *cursor)
    assert result.returncode == 2, result.stderr.decode()
    assert result.stderr.decode() == f"ppship: error: {what} {secret} {fault}\n"


def test_a_prefix_loses_only_its_outer_slashes():
    assert [key_prefix(text) for text in ("/lake/2026/", "lake", "", "/")] == ["lake/2026", "lake", "", ""]


@pytest.mark.parametrize(
    "text, address",
    [
        ("127.0.0.1:24224", ("127.0.0.1", 24224)),
        ("[::1]:0", ("::1", 0)),
        ("fluent.example:1", ("fluent.example", 1)),
    ],
)
def test_host_and_port_reads_names_ipv4_and_bracketed_ipv6(text, address):
    assert host_and_port(text, "--forward") == address


@pytest.mark.parametrize("text", ["::1:24224", "1:2:3", "fe80::1:0"])
def test_an_ipv6_address_without_brackets_is_refused_not_guessed(text):
    with pytest.raises(ConfigError) as refused:
        host_and_port(text, "--upstream")
    assert (
        str(refused.value) == f"--upstream wants an IPv6 address in brackets, as in [::1]:24224, got {text!r}"
    )


@pytest.mark.parametrize(
    "command, refused",
    [
        (["ship", *TABLE, "--bucket", "b"], "--bucket is for --output s3, but the output is stdout"),
        (
            ["ship", *TABLE, "--output", "s3", "--forward-tls"],
            "--forward-tls is for --output forward, but the output is s3",
        ),
        (
            ["tap", "fetch", "--output", "forward", "--format", "text"],
            "--format is for --output stdout, but the output is forward",
        ),
        (
            ["pod", "stream", "--type", "message", "--spool-dir", "s"],
            "--spool-dir is for --output s3, but the output is stdout",
        ),
        (
            ["relay", "--output", "s3", "--upstream", "127.0.0.1:1"],
            "--upstream is for --output forward, but the output is s3",
        ),
        (
            ["relay", "--output", "s3", "--upstream-ca", "ca.pem"],
            "--upstream-ca is for --output forward, but the output is s3",
        ),
        (
            ["relay", "--upstream", "127.0.0.1:1", "--batch-age", "5"],
            "--batch-age is for --output s3, but the output is forward",
        ),
        (
            ["ship", *TABLE, "--acl", "bucket-owner-full-control"],
            "--acl is for --output s3, but the output is stdout",
        ),
    ],
)
def test_a_flag_of_an_output_not_chosen_is_refused_not_ignored(command, refused, tmp_path, monkeypatch):
    for name in ("TAP_PRINCIPAL", "TAP_SECRET", "POD_TOKEN", "POD_CLUSTER_ID"):
        monkeypatch.setenv(name, "x")
    cursor = ["--cursor", str(tmp_path / "c.json")] if command[0] in ("tap", "pod") else []
    result = run_ppship(*command, *cursor)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[-1] == f"ppship: error: {refused}"


@pytest.mark.parametrize(
    "command",
    [
        ["gateway", "parse"],
        ["gateway", "assemble"],
        ["ship", "--table", "proofpoint_tap_clicks_blocked"],
        ["gateway", "parse", "--follow", "--position-file", "{tmp}/position.json"],
    ],
)
def test_an_input_that_fails_to_read_is_one_error_line_and_exit_2(command, tmp_path):
    # Reading /proc/self/mem at its start fails with EIO, as a failing disk would. A command that
    # reads to the end counts what it read before the error (here nothing) on the line above it.
    result = run_ppship(*(arg.format(tmp=tmp_path) for arg in command), "/proc/self/mem")
    assert result.returncode == 2
    *counts, error = result.stderr.decode().splitlines()
    assert error == "ppship: error: cannot read /proc/self/mem: Input/output error"
    assert len(counts) == (0 if "--follow" in command else 1)
    assert all(line.startswith(f"ppship {command[0]}") for line in counts), counts


def test_every_flag_the_readmes_name_is_a_flag_of_a_command():
    """A renamed or removed flag must not live on in the documentation users copy from."""
    flags: set[str] = set()

    def collect(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            flags.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    collect(command)

    collect(build_parser())
    root = Path(__file__).parent.parent
    text = (root / "README.md").read_text() + (root / "shipper_configs" / "README.md").read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--check"}  # `ruff format --check`
    assert named and named <= flags, sorted(named - flags)


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return dict(commands.choices)


def test_a_command_word_registers_that_command_alone_and_as_in_the_full_parser():
    """`main` builds the parser of the named command only: it must be the full parser's."""
    full = command_parsers(build_parser())
    assert list(full) == list(COMMANDS)
    for name in COMMANDS:
        alone = command_parsers(build_parser([name, "--help"]))
        assert list(alone) == [name]
        assert alone[name].format_help() == full[name].format_help()
