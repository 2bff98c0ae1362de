"""The shipped rsyslog flow (an appliance's syslog into the file the followers read), and what a
gateway host's rsyslog forwards in RFC 5424, run by the real rsyslogd and logrotate where they are
installed (`apt install rsyslog logrotate`); where they are not, those tests are skipped and say
so. The paths the shipped files share are checked everywhere."""

import contextlib
import grp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import proofpoint_shipper
from tests.agent_configs import CONFIGS
from tests.conftest import GOLDEN_REFERENCE, GOLDEN_ZONE, run_ppship, wait_for

CONF = CONFIGS / "rsyslog" / "proofpoint-gateway.conf"
ROTATE = CONFIGS / "rsyslog" / "proofpoint-gateway.logrotate"
DEMO_LOG = Path(proofpoint_shipper.__file__).parent / "data" / "gateway-demo.log"
SETTINGS = ("--timezone", GOLDEN_ZONE, "--reference-time", GOLDEN_REFERENCE)
TEXT = ("--format", "text", "--streams", "filter,sendmail")  # the lines of the two text tables
SBIN = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
RSYSLOGD, LOGROTATE = shutil.which("rsyslogd", path=SBIN), shutil.which("logrotate", path=SBIN)
needs_rsyslogd = pytest.mark.skipif(
    RSYSLOGD is None, reason="no rsyslogd on this machine: the shipped rsyslog config was not run"
)
needs_logrotate = pytest.mark.skipif(
    LOGROTATE is None, reason="no logrotate on this machine: the shipped rotation was not run"
)


def _written_path() -> str:
    (path,) = re.findall(r'^\s*file="([^"]+)"', CONF.read_text(), re.M)
    return path


def test_the_file_rsyslog_writes_is_the_one_rotated_and_the_one_the_followers_are_told_to_read():
    path = _written_path()
    assert re.search(rf"^{re.escape(path)} {{$", ROTATE.read_text(), re.M)
    assert f"GATEWAY_LOG={path}" in CONF.read_text()
    assert "rsyslog/proofpoint-gateway.conf" in (CONFIGS / "vector" / "gateway.yaml").read_text()


def _sent_lines() -> list[bytes]:
    """The demo log as a syslog sender puts it on the wire: each message opens with its <PRI>
    (rsyslog takes a message that opens with a digit for an octet-counted frame)."""
    return [line if line.startswith(b"<") else b"<22>" + line for line in DEMO_LOG.read_bytes().splitlines()]


def _as_written(line: bytes) -> bytes:
    """rsyslog writes control characters as #ooo (its global default, left as it is)."""
    return line.replace(b"\t", b"#011")


def _free_port() -> int:
    """A port of 127.0.0.1 free for TCP and UDP both, as the config listens on both."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


def _local_config(folder: Path, port: int) -> Path:
    """The shipped config, listening on 127.0.0.1:port and writing under `folder`, as this user."""
    text = CONF.read_text()
    local = (
        text.replace('port="514"', f'address="127.0.0.1" port="{port}"')
        .replace(_written_path(), str(folder / "log" / "gateway.log"))
        .replace('Group="adm"', f'Group="{grp.getgrgid(os.getgid()).gr_name}"')
    )
    assert local.count(f'port="{port}"') == 2 and str(folder) in local and 'Group="adm"' not in local
    (folder / "work").mkdir()
    path = folder / "rsyslog.conf"
    path.write_text(f'global(workDirectory="{folder / "work"}")\n{local}')
    return path


@contextlib.contextmanager
def _running_rsyslogd(config: Path, port: int):
    """rsyslogd on `config`, checked first, until the block ends; yields its pid."""
    checked = subprocess.run([RSYSLOGD, "-N1", "-f", config], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with (config.parent / "rsyslogd.out").open("wb") as out:
        process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", config, "-i", config.parent / "rsyslogd.pid"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _accepts(port), seconds=20)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def rsyslogd(tmp_path):
    port = _free_port()
    with _running_rsyslogd(_local_config(tmp_path, port), port) as pid:
        yield SimpleNamespace(port=port, log=tmp_path / "log" / "gateway.log", pid=pid)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _send_tcp(port: int, frames: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"".join(frames))


def _lines_in(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


@needs_rsyslogd
def test_every_framing_lands_each_line_as_the_gateway_sent_it(rsyslogd):
    sent = _sent_lines()
    expected = [_as_written(line) for line in sent]
    by_udp = sent[:300]  # a datagram each: loopback keeps them, but not necessarily in order
    # rsyslog reads connections side by side: the next is sent once the last one's lines are in
    _send_tcp(rsyslogd.port, [line + b"\n" for line in sent])
    wait_for(lambda: len(_lines_in(rsyslogd.log)) >= len(sent), seconds=30)
    counted = [line + b"\n" * (number % 2) for number, line in enumerate(sent)]  # a newline, counted
    _send_tcp(rsyslogd.port, [b"%d %s" % (len(frame), frame) for frame in counted])  # octet counting
    wait_for(lambda: len(_lines_in(rsyslogd.log)) >= 2 * len(sent), seconds=30)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for number, line in enumerate(by_udp):  # some senders end a datagram with a newline
            udp.sendto(line + b"\n" * (number % 2), ("127.0.0.1", rsyslogd.port))
            time.sleep(0.001)
    wait_for(lambda: len(_lines_in(rsyslogd.log)) >= 2 * len(sent) + len(by_udp), seconds=30)
    written = _lines_in(rsyslogd.log)
    assert written[: len(sent)] == expected
    assert written[len(sent) : 2 * len(sent)] == expected
    assert sorted(written[2 * len(sent) :]) == sorted(expected[: len(by_udp)])


def _follower(tmp_path: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "proofpoint_shipper", "gateway", "parse", "--follow", str(log)]
    options = [*TEXT, "--rotate-wait", "0.5", *SETTINGS]
    position = ["--position-file", str(tmp_path / "position.json")]
    with (tmp_path / "followed.txt").open("wb") as out:
        return subprocess.Popen([*command, *options, *position], stdout=out, stderr=subprocess.PIPE)


def _rotate(tmp_path: Path, log: Path, rsyslogd_pid: int) -> None:
    """The shipped rotation of `log`, forced now, its postrotate signalling this rsyslogd only."""
    text = ROTATE.read_text().replace(_written_path(), str(log))
    text, signals = re.subn(r"(?m)^(\s+)systemctl kill .*$", rf"\1kill -HUP {rsyslogd_pid}", text)
    assert signals == 1
    config = tmp_path / "logrotate.conf"
    config.write_text(text)
    state = tmp_path / "logrotate.state"
    rotated = subprocess.run([LOGROTATE, "-f", "-s", state, config], capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    assert log.with_name(log.name + ".1").exists(), "logrotate rotated nothing"


def _text_lines(lines: list[bytes]) -> list[bytes]:
    """What `gateway parse --format text` makes of lines as rsyslog writes them."""
    written = b"".join(_as_written(line) + b"\n" for line in lines)
    return run_ppship("gateway", "parse", *TEXT, *SETTINGS, input=written).stdout.splitlines()


@needs_rsyslogd
@needs_logrotate
def test_a_follower_of_the_file_reads_every_gateway_line_across_a_rotation(rsyslogd, tmp_path):
    sent = _sent_lines()
    half = len(sent) // 2
    before, after = _text_lines(sent[:half]), _text_lines(sent[half:])
    followed = tmp_path / "followed.txt"
    follower = _follower(tmp_path, rsyslogd.log)
    try:
        _send_tcp(rsyslogd.port, [line + b"\n" for line in sent[:half]])
        wait_for(lambda: len(_lines_in(followed)) >= len(before), seconds=30)
        _rotate(tmp_path, rsyslogd.log, rsyslogd.pid)
        # rsyslog writes on to the renamed file until its HUP is handled: the follower reads it out
        _send_tcp(rsyslogd.port, [line + b"\n" for line in sent[half:]])
        wait_for(lambda: len(_lines_in(followed)) >= len(before) + len(after), seconds=30)
    finally:
        follower.send_signal(signal.SIGTERM)
        _, errors = follower.communicate(timeout=30)
    assert follower.returncode == 0, errors
    assert b"was rotated: finishing the old file" in errors
    assert _lines_in(followed) == before + after


# What a gateway host's rsyslog forwards in RFC 5424 (omfwd with this template sends these bytes):
# its msg property keeps the space after a BSD-style tag, "- -  rprt s=...".
FORWARDING_CONFIG = """global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="forward")
ruleset(name="forward") {{
    action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
}}
"""
SAME_IN_BOTH = ("stream", "time", "host", "program", "pid", "severity", "qid", "fields", "message")


def _records(lines: list[bytes]) -> list[dict]:
    written = run_ppship("gateway", "parse", *SETTINGS, input=b"".join(line + b"\n" for line in lines))
    return [json.loads(line) for line in written.stdout.splitlines()]


@needs_rsyslogd
def test_lines_a_gateway_hosts_rsyslog_forwards_in_rfc_5424_parse_as_the_lines_it_was_given(tmp_path):
    port, forwarded = _free_port(), tmp_path / "forwarded.log"
    (tmp_path / "work").mkdir()
    config = tmp_path / "rsyslog.conf"
    config.write_text(FORWARDING_CONFIG.format(work=tmp_path / "work", port=port, out=forwarded))
    tagged = re.compile(rb"\d{4}-\d\d-\d\dT\S+ \S+ [\w.-]+\[\d+\]: \S")  # RFC 3339, host, prog[pid]:
    lines = [line for line in DEMO_LOG.read_bytes().splitlines() if tagged.match(line)]
    given = [line for line, record in zip(lines, _records(lines), strict=True) if "error" not in record]
    with _running_rsyslogd(config, port):
        _send_tcp(port, [b"<22>" + line + b"\n" for line in given])
        wait_for(lambda: len(_lines_in(forwarded)) >= len(given), seconds=30)
    assert b"- -  " in _lines_in(forwarded)[0]  # the form this test is about
    expected = [
        {key: record.get(key) for key in SAME_IN_BOTH} for record in _records(list(map(_as_written, given)))
    ]
    records = _records(_lines_in(forwarded))
    assert [{key: record.get(key) for key in SAME_IN_BOTH} for record in records] == expected
    assert not any("error" in record for record in records)
