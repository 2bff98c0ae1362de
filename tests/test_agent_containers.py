"""The shipped configs run by the real agents, in containers, against the local S3 server.

These need a Docker engine (and the agents' images, pulled on first use); where none answers they
skip with that reason. `make itest` runs only these. The configs are used as shipped except for
the upload timer, shortened so objects appear within the test, and environment values pointing
at the local S3. The agents run with host networking, so 127.0.0.1 is the test's own loopback.
"""

import gzip
import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.agent_configs import CONFIGS
from tests.conftest import run_ppship

pytestmark = pytest.mark.docker
IMAGES = {
    "fluent-bit": "fluent/fluent-bit:4.2",
    "vector": "timberio/vector:0.49.0-debian",
    "fluentd": "fluent/fluentd:v1.19-2",
}
# Fluent Bit 5.0.4 and later send events with metadata to a forward output by default.
FLUENT_BIT_RELEASES = ["fluent/fluent-bit:4.2", "fluent/fluent-bit:5.0.6"]
FILTER_LINE = (
    "2022-02-20T08:35:00.157994-06:00 mx1 filter_instance1[21074]: rprt s=3ebnb6gs7y m=1 "
    "x=3ebnb6gs7y-1 mod=session cmd=disconnect"
)
# table -> (the line as the gateway wrote it, the line as the text table holds it)
GATEWAY_LINES = {
    "proofpoint_gateway_filter_logs": (FILTER_LINE, FILTER_LINE),  # already normal: byte-identical
    "proofpoint_gateway_sendmail_logs": (
        "Feb  3 08:35:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent",
        "2022-02-03T08:35:00.000000+00:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent",
    ),
}
SAMPLES = Path(__file__).parent / "data" / "tap_seed_samples.ndjson"
TAP_TABLES = {
    "messagesDelivered": "proofpoint_tap_messages_delivered",
    "messagesBlocked": "proofpoint_tap_messages_blocked",
    "clicksPermitted": "proofpoint_tap_clicks_permitted",
    "clicksBlocked": "proofpoint_tap_clicks_blocked",
}


@pytest.fixture(scope="module")
def engine():
    import docker

    reason = _no_engine_reason()
    if reason:
        pytest.skip(f"{reason}; run `make itest` where a Docker engine runs")
    client = docker.from_env()
    yield client
    client.close()


def _no_engine_reason() -> str | None:
    """Why no engine answers, asked on the socket itself: the SDK leaks its socket when none does."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None  # a remote engine: let the SDK find out
    path = host.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError as exc:
            return f"no Docker engine answers at {path} ({exc.strerror})"
    return None


def _environment(local_s3, bucket: str, data: str) -> dict[str, str]:
    return {
        "S3_BUCKET": bucket,
        "S3_PREFIX": "lake",
        "AWS_REGION": "us-east-1",
        "S3_ENDPOINT": local_s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "HOSTNAME": "itest",
        "FLB_STORAGE_DIR": f"{data}/storage",
        "FLB_STORE_DIR": f"{data}/s3",
        "VECTOR_DATA_DIR": data,
    }


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the agent never listened on 127.0.0.1:{port}")


def _ship_tap_samples(tmp_path: Path) -> None:
    for line in SAMPLES.read_text().splitlines():
        item = json.loads(line)
        record = {**item["expected"], "eventType": item["array"]}
        path = tmp_path / f"{item['array']}.ndjson"
        path.write_text(json.dumps(record) + "\n")
        flags = ("--output", "forward", "--forward", "127.0.0.1:24224")
        result = run_ppship("ship", "--table", TAP_TABLES[item["array"]], *flags, str(path))
        assert result.returncode == 0, result.stderr.decode()


def _tables_landed(client, bucket: str, seconds: float = 120) -> dict[str, list[dict]]:
    deadline, landed = time.monotonic() + seconds, {}
    while time.monotonic() < deadline and len(landed) < len(TAP_TABLES):
        for item in client.list_objects_v2(Bucket=bucket, Prefix="lake/").get("Contents", []):
            body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            landed[item["Key"].split("/")[1]] = [json.loads(line) for line in body.splitlines()]
        time.sleep(2)
    return landed


@pytest.mark.parametrize(
    ("agent", "edit", "command"),
    [
        ("fluent-bit", ("upload_timeout: 10m", "upload_timeout: 5s"), ["-c", "/config/tap.yaml"]),
        ("vector", ("timeout_secs: 600", "timeout_secs: 5"), ["--config", "/config/tap.yaml"]),
    ],
)
def test_tap_flow_lands_the_four_tables(engine, local_s3, bucket, tmp_path, agent, edit, command):
    config_dir = _folders(tmp_path)
    _write_config(config_dir, CONFIGS / agent / "tap.yaml", [edit])
    container = _run_agent(engine, IMAGES[agent], command, _environment(local_s3, bucket, "/data"), tmp_path)
    try:
        _wait_for_port(24224)
        _ship_tap_samples(tmp_path)
        landed = _tables_landed(local_s3.client(), bucket)
    finally:
        logs = _stopped(container)
    assert set(landed) == set(TAP_TABLES.values()), logs
    for records in landed.values():
        assert all("date" not in record and "table" not in record for record in records), records


@pytest.mark.parametrize("image", FLUENT_BIT_RELEASES)
def test_gateway_flow_through_the_relay_lands_the_two_text_tables(engine, local_s3, bucket, tmp_path, image):
    """Fluent Bit tails the mail log and forwards it to the real relay, which sends the parsed
    records back to Fluent Bit's forward input; the S3 outputs write the normalised lines."""
    config_dir = _folders(tmp_path, with_mail_log=True)
    edits = [("read_from_head: false", "read_from_head: true")]  # the lines are there before it starts
    environment = {"GATEWAY_LOG": "/data/maillog", "FLB_DB_DIR": "/data"}
    flow = _GatewayFlow(engine, image, local_s3, bucket, tmp_path)
    landed, logs = flow.run(config_dir, "gateway.yaml", edits, environment)
    assert landed == {table: [normalised] for table, (_, normalised) in GATEWAY_LINES.items()}, logs


@pytest.mark.parametrize("image", FLUENT_BIT_RELEASES)
def test_gateway_syslog_over_tcp_through_the_relay_lands_the_two_text_tables(
    engine, local_s3, bucket, tmp_path, image
):
    """A gateway sends its syslog over TCP, <PRI> first; Fluent Bit's tcp input keeps each line
    whole under `log` for the real relay; the S3 outputs write the normalised lines."""
    config_dir = _folders(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        syslog_port = probe.getsockname()[1]

    def send_as_a_gateway() -> None:
        _wait_for_port(syslog_port)
        with socket.create_connection(("127.0.0.1", syslog_port)) as gateway:
            gateway.sendall(b"".join(f"<22>{line}\n".encode() for line, _ in GATEWAY_LINES.values()))

    environment = {"SYSLOG_LISTEN": "127.0.0.1", "SYSLOG_PORT": str(syslog_port)}
    flow = _GatewayFlow(engine, image, local_s3, bucket, tmp_path)
    landed, logs = flow.run(config_dir, "gateway-syslog.yaml", [], environment, send_as_a_gateway)
    assert landed == {table: [normalised] for table, (_, normalised) in GATEWAY_LINES.items()}, logs


class _GatewayFlow:
    """A Fluent Bit gateway config run with the real relay: what landed in the text tables."""

    def __init__(self, engine, image: str, local_s3, bucket: str, tmp_path: Path):
        self.engine, self.image, self.local_s3, self.bucket, self.tmp_path = (
            engine,
            image,
            local_s3,
            bucket,
            tmp_path,
        )

    def run(self, config_dir: Path, config: str, edits, environment: dict, deliver=None):
        """(table → lines landed, the agent's and the relay's logs); `deliver` sends the lines."""
        from tests.test_relay import stop_relay

        relay, relay_port = _relay_to_the_agent()
        edits = [
            ("upload_timeout: 10m", "upload_timeout: 5s"),
            ("port: 24225", f"port: {relay_port}"),
            *edits,
        ]
        _write_config(config_dir, CONFIGS / "fluent-bit" / config, edits)
        environment = _environment(self.local_s3, self.bucket, "/data") | environment
        container = _run_agent(
            self.engine, self.image, ["-c", f"/config/{config}"], environment, self.tmp_path
        )
        try:
            if deliver is not None:
                deliver()
            landed = _text_tables_landed(self.local_s3.client(), self.bucket, set(GATEWAY_LINES))
        finally:
            logs = _stopped(container)
            relay_log = stop_relay(relay).decode(errors="replace")[-2000:]
        return landed, logs + relay_log


def _text_tables_landed(client, bucket: str, tables: set[str], seconds: float = 120) -> dict[str, list[str]]:
    deadline, landed = time.monotonic() + seconds, {}
    while time.monotonic() < deadline and set(landed) != tables:
        for item in client.list_objects_v2(Bucket=bucket, Prefix="lake/").get("Contents", []):
            body = gzip.decompress(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            landed[item["Key"].split("/")[1]] = body.decode().splitlines()
        time.sleep(2)
    return landed


def test_fluentd_flow_through_the_relay_gets_the_parsed_records_back(engine, tmp_path):
    """Fluentd's out_forward (PackedForward entries as str32) to the real relay, and the parsed
    records back on its forward input, written by the config's stdout output."""
    from tests.test_relay import stop_relay

    config_dir = _folders(tmp_path, with_mail_log=True)
    relay, relay_port = _relay_to_the_agent()
    edits = [
        ("port 24225", f"port {relay_port}"),
        (
            "  tag gateway.raw\n",
            "  tag gateway.raw\n  read_from_head true\n",
        ),  # lines written before it starts
    ]
    _write_config(config_dir, CONFIGS / "fluentd" / "relay-forward.conf", edits)
    environment = {"GATEWAY_LOG": "/data/maillog", "FLUENTD_STATE_DIR": "/data"}
    command = ["fluentd", "-c", "/config/relay-forward.conf"]
    container = _run_agent(engine, IMAGES["fluentd"], command, environment, tmp_path)
    wanted = ["proofpoint.gateway.filter: ", "proofpoint.gateway.sendmail: ", '"qid":"w3HMWjG3039079"']
    try:
        deadline, logs = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not all(part in logs for part in wanted):
            time.sleep(2)
            logs = container.logs().decode(errors="replace")
    finally:
        _stopped(container)
        relay_log = stop_relay(relay).decode(errors="replace")[-2000:]
    assert all(part in logs for part in wanted), logs[-3000:] + relay_log


def _folders(tmp_path: Path, with_mail_log: bool = False) -> Path:
    """config/ (read-only in the container, returned) and data/ (writable by the agent's user)."""
    config_dir, data = tmp_path / "config", tmp_path / "data"
    config_dir.mkdir()
    data.mkdir(mode=0o777)
    if with_mail_log:
        (data / "maillog").write_text("".join(sent + "\n" for sent, _ in GATEWAY_LINES.values()))
    return config_dir


def _write_config(config_dir: Path, shipped: Path, edits: list[tuple[str, str]]) -> None:
    """The shipped config with only these edits, each checked to apply."""
    text = shipped.read_text()
    for old, new in edits:
        assert old in text, f"{shipped.name} no longer holds {old!r}"
        text = text.replace(old, new)
    (config_dir / shipped.name).write_text(text)


def _run_agent(engine, image: str, command: list[str], environment: dict, tmp_path: Path):
    return engine.containers.run(
        image,
        command,
        detach=True,
        network_mode="host",
        environment=environment,
        volumes={
            str(tmp_path / "config"): {"bind": "/config", "mode": "ro"},
            str(tmp_path / "data"): {"bind": "/data", "mode": "rw"},
        },
    )


def _stopped(container) -> str:
    """Stop and remove the container; the end of its log."""
    logs = container.logs().decode(errors="replace")[-3000:]
    container.stop(timeout=30)
    container.remove()
    return logs


def _relay_to_the_agent():
    """The real relay, sending to the agent's forward input; BSD years against 2022, as the
    expected lines have them."""
    from tests.test_relay import start_relay

    return start_relay(24224, "--reference-time", "2022-03-01T00:00:00+00:00")
