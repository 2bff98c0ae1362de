"""`--metrics-port`: the Prometheus endpoint of the relay and the collectors, scraped for real.

Each command runs as a real process against real local parts (forward receiver, TAP and PoD
simulators); the endpoint is read with prometheus-client's own parser of the text format.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fluent.sender import EventTime
from prometheus_client.parser import text_string_to_metric_families

from proofpoint_shipper import metrics
from proofpoint_shipper.pod.events import Timeline
from proofpoint_shipper.pod.simulator import PodSimulator
from proofpoint_shipper.streams import BY_NAME
from tests import ports
from tests.conftest import golden_lines
from tests.forward_receiver import ForwardReceiver
from tests.tap_harness import PRINCIPAL, SECRET
from tests.test_relay import send_chunk

PPSHIP = [sys.executable, "-m", "proofpoint_shipper"]
# Metrics are read straight from this machine: urllib would send http://[::1]:... to a proxy set
# for it, as NO_PROXY's "::1" does not match the bracketed host.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(url: str) -> dict[tuple[str, str], float]:
    """Every sample as {(name, its one label value or ""): value}."""
    with DIRECT.open(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (sample.name, next(iter(sample.labels.values()), "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_url(process: subprocess.Popen) -> str:
    """The endpoint the command logged on stderr (it was given --metrics-port 0)."""
    for line in process.stderr:
        found = re.search(rb"metrics at (http://[^\s\"]+)", line)
        if found:
            return found.group(1).decode()
    raise AssertionError("the command never logged its metrics endpoint")


def wait_for(url: str, condition, seconds: float = 60.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        if condition(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> bytes:
    """SIGTERM, then the rest of its stderr."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-1000:]
    return stderr


def test_the_text_format_parses_and_label_values_are_escaped():
    family = metrics.Family("demo_total", "counter", "A demo.", "table")
    family.inc(3, 'odd "name"\\with\nnewline')
    family.inc(0.5, "plain")
    parsed = {
        sample.labels["table"]: sample.value
        for parsed_family in text_string_to_metric_families(family.render())
        for sample in parsed_family.samples
    }
    assert parsed == {'odd "name"\\with\nnewline': 3, "plain": 0.5}


def test_the_request_log_forgets_requests_older_than_its_period():
    now = [0.0]
    requests = metrics.RequestLog(period=10.0, clock=lambda: now[0])
    assert [requests.add() for _ in range(3)] == [1, 2, 3]
    now[0] = 10.5
    assert requests.add() == 1


def test_relay_counts_records_in_out_parse_errors_and_upstream_retries():
    upstream_port = ports.refused_port()  # where upstream will come up later
    command = [*PPSHIP, "relay", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream_port}"]
    command += ["--timezone", "UTC", "--metrics-port", "0", "--log-format", "json"]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receiver = ForwardReceiver()
    try:
        url = metrics_url(relay)
        port = int(re.search(rb":(\d+)", relay.stdout.readline()).group(1))
        assert scrape(url).get(("ppship_records_in_total", "proofpoint_gateway_filter_logs")) is None

        lines = [line for line in golden_lines() if line]
        entries = [(EventTime(1645367700 + n, 0), {"log": line}) for n, line in enumerate(lines)]
        reply: list = []
        sender = _in_thread(lambda: reply.append(send_chunk(port, "forward", entries, timeout=60)))
        retried = wait_for(url, lambda s: s.get(("ppship_retries_total", "forward"), 0) >= 1)
        assert retried.get(("ppship_retries_total", "forward"), 0) >= 1  # upstream is down
        assert retried.get(("ppship_records_out_total", "proofpoint_gateway_filter_logs")) is None

        receiver.start(upstream_port)
        sender.join(60)
        assert reply == [{"ack": "chunk-1"}]
        samples = scrape(url)
        records = [record for _, _, record in receiver.entries]
        by_table = Counter(_table(record) for record in records)
        errors = Counter(_table(record) for record in records if "error" in record)
        assert errors  # the golden lines include lines that do not parse
        for table, count in by_table.items():
            assert samples[("ppship_records_in_total", table)] == count
            assert samples[("ppship_records_out_total", table)] == count
        for table, count in errors.items():
            assert samples[("ppship_parse_errors_total", table)] == count

        assert send_chunk(port, "forward", entries[:5], chunk="again") == {"ack": "again"}
        moved = scrape(url)
        assert sum(v for (n, _), v in moved.items() if n == "ppship_records_out_total") == len(lines) + 5
    finally:
        stderr = stop(relay)
        receiver.stop()
    logged = [json.loads(line) for line in stderr.splitlines()]  # --log-format json: every line
    assert any(entry["level"] == "warning" and "retry" in entry["message"] for entry in logged)
    assert all(set(entry) >= {"time", "level", "logger", "message"} for entry in logged)


def _table(record: dict) -> str:
    return BY_NAME[record["stream"]].table if record["stream"] in BY_NAME else "other"


def _in_thread(action):
    import threading

    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def test_pod_stream_counts_records_cursor_lag_and_reconnects(tmp_path):
    timeline = Timeline(3, datetime.now(UTC) - timedelta(hours=2), rate=20)
    with PodSimulator(timeline, "metrics-token", "cid") as simulator:
        simulator.drop_every = 40
        command = [*PPSHIP, "pod", "stream", "--type", "message", "--url", simulator.url]
        command += ["--cursor", str(tmp_path / "pod.json"), "--metrics-port", "0"]
        env = {**os.environ, "POD_TOKEN": "metrics-token", "POD_CLUSTER_ID": "cid"}
        with open(tmp_path / "out.ndjson", "wb") as out:
            pod = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env)
            try:
                url = metrics_url(pod)
                table = BY_NAME["pod_message"].table
                samples = wait_for(
                    url, lambda s: s.get(("ppship_websocket_reconnects_total", "message"), 0) >= 2
                )
                assert samples[("ppship_websocket_reconnects_total", "message")] >= 2
                assert (
                    samples[("ppship_records_in_total", table)]
                    >= samples[("ppship_records_out_total", table)]
                    > 0
                )
                assert 0 <= samples[("ppship_cursor_lag_seconds", table)] < 3600
                later = wait_for(
                    url,
                    lambda s: (
                        s[("ppship_records_out_total", table)] > samples[("ppship_records_out_total", table)]
                    ),
                )
                assert (
                    later[("ppship_records_out_total", table)] > samples[("ppship_records_out_total", table)]
                )
            finally:
                stop(pod)


@pytest.fixture
def tap_simulator():
    from proofpoint_shipper.tap.events import generate
    from proofpoint_shipper.tap.simulator import TapSimulator

    end = datetime.now(UTC)
    with TapSimulator(list(generate(5, end - timedelta(hours=3), end, 60)), PRINCIPAL, SECRET) as server:
        yield server


def test_tap_fetch_counts_quota_records_and_cursor_lag(tap_simulator, tmp_path):
    command = [*PPSHIP, "tap", "fetch", "--follow", "--interval", "1", "--since", "3h"]
    command += ["--base-url", tap_simulator.url, "--cursor", str(tmp_path / "cursor.json")]
    command += ["--metrics-port", "0", "--log-format", "json"]
    env = {**os.environ, "TAP_PRINCIPAL": PRINCIPAL, "TAP_SECRET": SECRET}
    with open(tmp_path / "out.ndjson", "wb") as out:
        tap = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env)
        try:
            url = metrics_url(tap)
            first = wait_for(url, lambda s: s.get(("ppship_tap_quota_used", ""), 0) >= 3)
            second = wait_for(
                url, lambda s: s[("ppship_tap_quota_used", "")] > first[("ppship_tap_quota_used", "")]
            )
        finally:
            stop(tap)
    assert second[("ppship_tap_quota_used", "")] > first[("ppship_tap_quota_used", "")] >= 3
    written = Counter(
        line.split(b'"table":"')[1].split(b'"')[0].decode()
        for line in (tmp_path / "out.ndjson").read_bytes().splitlines()
    )
    for table, count in written.items():
        assert 0 < second[("ppship_records_out_total", table)] <= count
        assert second[("ppship_records_in_total", table)] >= second[("ppship_records_out_total", table)]
        assert 120 <= second[("ppship_cursor_lag_seconds", table)] < 600  # --lag is 2 minutes


def test_a_connection_that_sends_no_request_is_closed_after_the_timeout(monkeypatch):
    """Each connection holds a thread of the server: one that never sent its request held it for
    the life of the process. The bound is shortened here, once checked to be there."""
    assert 0 < (metrics._Handler.timeout or 0) <= 60
    monkeypatch.setattr(metrics._Handler, "timeout", 0.5)
    with metrics.MetricsServer() as server:
        host, port = server.url.split("/")[2].split(":")
        with socket.create_connection((host, int(port)), timeout=20) as idle:
            assert idle.recv(1) == b""  # closed by the server, not our own timeout (TimeoutError)
        with urllib.request.urlopen(server.url, timeout=20) as answer:
            assert answer.status == 200  # the server itself goes on


def test_a_metrics_port_in_use_or_out_of_range_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = subprocess.run([*PPSHIP, "relay", "--metrics-port", port], capture_output=True, timeout=60)
    assert busy.returncode == 2
    assert (
        busy.stderr.decode().strip()
        == f"ppship: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    )
    wrong = subprocess.run(
        [*PPSHIP, "tap", "fetch", "--metrics-port", "70000"], capture_output=True, timeout=60
    )
    assert wrong.returncode == 2 and b"not a port number (0-65535): '70000'" in wrong.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["tap", "fetch", "--once"],
        ["pod", "stream", "--type", "message"],
        ["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"],
        ["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--workers", "2"],
    ],
    ids=["tap", "pod", "relay", "relay-workers"],
)
def test_a_metrics_host_without_a_metrics_port_is_refused_not_ignored(command):
    # Before, the command ran with no endpoint, and the scraper pointed at it found nothing.
    env = {**os.environ, "TAP_PRINCIPAL": PRINCIPAL, "TAP_SECRET": SECRET, "POD_TOKEN": "t"}
    env["POD_CLUSTER_ID"] = "c"
    result = subprocess.run(
        [*PPSHIP, *command, "--metrics-host", "0.0.0.0"], capture_output=True, timeout=60, env=env
    )
    assert result.returncode == 2
    assert (
        result.stderr.decode().strip()
        == "ppship: error: --metrics-host is for --metrics-port, which is not given"
    )
    assert result.stdout == b""


def test_metrics_are_served_on_ipv6_too():
    """The standard library's HTTP server binds IPv4 only: `--metrics-host ::1` failed at start."""
    command = [*PPSHIP, "relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]
    relay = subprocess.Popen(
        [*command, "--metrics-port", "0", "--metrics-host", "::1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = metrics_url(relay)
        assert url.startswith("http://[::1]:")
        with DIRECT.open(url, timeout=10) as response:
            assert b"# TYPE ppship_records_in_total counter" in response.read()
    finally:
        relay.kill()
        relay.communicate()
