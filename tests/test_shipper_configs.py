"""The shipped agent configs, held to account: every ppship command line against the real CLI,
every S3 prefix against streams.py, and the Fluent Bit rules that a config can silently break."""

import contextlib
import fnmatch
import io
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from proofpoint_shipper.cli import build_parser
from proofpoint_shipper.listening import is_loopback
from proofpoint_shipper.service import host_and_port
from proofpoint_shipper.sinks.options import check_output_flags
from proofpoint_shipper.streams import BY_NAME, BY_TABLE, STREAMS
from tests.agent_configs import (
    CONFIGS,
    FLUENT_BIT,
    classic_text,
    fluent_bit_classic,
    fluent_bit_yaml,
    ppship_commands,
)
from tests.test_demo import EVENT_TYPES  # the eventType each collector writes, by table

ALL_FILES = sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p.name != "README.md")
FB_YAML = sorted(FLUENT_BIT.glob("*.yaml"))
VECTOR = sorted((CONFIGS / "vector").glob("*.yaml"))
TABLE_IN_KEY = re.compile(r"/(proofpoint_[a-z_]+)/%Y/%m/%d/%H/")
TAP = {s.table for s in STREAMS if s.collection == "tap_api"}
POD = {s.table for s in STREAMS if s.collection == "pod_stream"}
GATEWAY = {s.table for s in STREAMS if s.collection == "gateway_syslog"}
EXPECTED_TABLES = {
    "tap": TAP,
    "pod": POD,
    "collectors": TAP | POD,
    "gateway": GATEWAY,
    "all-in-one": TAP | POD | GATEWAY,
}


def _size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]?)", text.upper()).groups()
    return int(number) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]


def _kind(path: Path) -> str:
    """The flow a config serves, whatever its input: tap-exec is tap, gateway-syslog is gateway."""
    return path.stem.removesuffix("-exec").removesuffix("-syslog")


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_says_how_to_run_it_and_what_it_needs(path):
    head = path.read_text()[:3000]
    assert re.search(r"^# (Run|Install):", head, re.M), "no '# Run:' (or '# Install:') line"
    assert re.search(r"^# Docs:", head, re.M), "no '# Docs:' line"
    if "parsers" not in path.name:
        assert re.search(r"Environment|EnvironmentFile|env", head), "no word on the environment it needs"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_file_is_listed_in_the_readme(path):
    assert str(path.relative_to(CONFIGS)) in (CONFIGS / "README.md").read_text()


DEPLOY = sorted((CONFIGS.parent / "deploy" / "kubernetes").glob("*.yaml"))
SIDECAR = CONFIGS / "sidecar" / "collectors-with-fluent-bit.yaml"


def _commands():
    for path in ALL_FILES + DEPLOY:
        for command in ppship_commands(path):
            yield pytest.param(command, id=f"{path.name}: {' '.join(command[:4])}")


# What the agent, systemd or Kubernetes puts in place of a variable before ppship sees the line:
# flags that check their value (--region, --bucket) cannot take "$(AWS_REGION)" itself.
DEPLOYED_VALUES = {"AWS_REGION": "eu-west-1", "GATEWAY_TZ": "America/Chicago", "S3_BUCKET": "security-lake"}


def _as_deployed(argument: str) -> str:
    return re.sub(
        r"\$(?:\((\w+)\)|\{(\w+)\})",
        lambda m: DEPLOYED_VALUES.get(m.group(1) or m.group(2), m.group(0)),
        argument,
    )


def _relay_commands():
    return [command for command in _commands() if command.values[0][1:2] == ["relay"]]


@pytest.mark.parametrize("command", _relay_commands())
def test_a_relay_that_other_hosts_can_reach_asks_its_clients_for_a_shared_key(command):
    """Else any host that reaches its port writes lines into the gateway tables."""
    args = build_parser().parse_args([_as_deployed(argument) for argument in command[1:]])
    host, _ = host_and_port(args.listen, "--listen")
    assert is_loopback(host) or args.shared_key_file is not None


def test_the_relay_commands_are_found():
    assert len(_relay_commands()) >= 2  # the systemd unit's and the Kubernetes relay's


@pytest.mark.parametrize("command", list(_commands()))
def test_every_ppship_command_line_is_accepted_by_the_real_cli(command):
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            args = build_parser().parse_args([_as_deployed(argument) for argument in command[1:]])
        except SystemExit:
            pytest.fail(f"ppship refuses {' '.join(command)}: {errors.getvalue().strip()}")
    if hasattr(args, "output_only_flags"):
        check_output_flags(args)  # no flag of an output other than the chosen one


def test_the_commands_are_found():
    """The check above is only worth something if it sees the commands: count them."""
    assert sum(1 for _ in _commands()) >= 15


@pytest.mark.parametrize("path", sorted((CONFIGS / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_a_unit_says_how_to_create_the_user_it_runs_as(path):
    """systemd refuses to start a unit whose User= does not exist (status 217/USER)."""
    text = path.read_text()
    (user,) = re.findall(r"^User=(\S+)$", text, re.M)
    assert re.search(rf"^#.*`useradd [^`]*\b{re.escape(user)}`", text, re.M)


@pytest.mark.parametrize(
    "path", sorted((CONFIGS / "systemd").glob("ppship-[tp]*.service")), ids=lambda p: p.name
)
def test_a_collectors_unit_backs_off_its_restarts(path):
    """A collector stopped by the API (refused credentials, a token in use: exit code 2) would
    otherwise be restarted, and put to the API again, every RestartSec for ever."""
    settings = dict(re.findall(r"^(\w+)=(.*)$", path.read_text(), re.M))
    assert int(settings["RestartSteps"]) > 0
    assert int(settings["RestartMaxDelaySec"]) >= 10 * int(settings["RestartSec"])


# -- Kubernetes ----------------------------------------------------------------------------------


def _manifests(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _pods(path: Path) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload in a manifest file."""
    workloads = ("Deployment", "StatefulSet", "DaemonSet")
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in _manifests(path)
        if doc["kind"] in workloads
    ]


@pytest.mark.parametrize("path", DEPLOY, ids=lambda p: p.name)
def test_each_claim_a_workload_mounts_is_in_the_file_and_held_by_that_workload_alone(path):
    """`kubectl apply -f` of one file gives every workload its volumes, and no two share a claim:
    a ReadWriteOnce volume attaches to one node, so the second could wait for good."""
    defined = {doc["metadata"]["name"] for doc in _manifests(path) if doc["kind"] == "PersistentVolumeClaim"}
    holders = Counter(
        volume["persistentVolumeClaim"]["claimName"]
        for _, pod in _pods(path)
        for volume in pod.get("volumes", [])
        if "persistentVolumeClaim" in volume
    )
    assert set(holders) <= defined
    assert all(count == 1 for count in holders.values()), holders


@pytest.mark.parametrize("path", [*DEPLOY, SIDECAR], ids=lambda p: p.name)
def test_each_secret_and_config_map_the_header_names_reaches_the_containers(path):
    """What the file's opening comment tells users to create is what the containers read."""
    text = path.read_text()
    named = set(re.findall(r"(secret|config map) `([\w-]+)`", text))
    assert named, "the header names what to create"
    referenced = set()
    for _, pod in _pods(path):
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    referenced.add(("secret", source["secretRef"]["name"]))
                if "configMapRef" in source:
                    referenced.add(("config map", source["configMapRef"]["name"]))
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                referenced.add(("secret", volume["secret"]["secretName"]))
    assert named <= referenced


@pytest.mark.parametrize("path", DEPLOY, ids=lambda p: p.name)
def test_a_workload_with_a_volume_can_write_to_it_as_the_images_user(path):
    """A new volume is root's: without fsGroup, the image's non-root user cannot save its state."""
    user = re.search(r"useradd .*--uid (\d+)", (CONFIGS.parent / "Dockerfile").read_text()).group(1)
    for name, pod in _pods(path):
        if any("persistentVolumeClaim" in volume for volume in pod.get("volumes", [])):
            assert pod.get("securityContext", {}).get("fsGroup") == int(user), name


RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("path", [*DEPLOY, SIDECAR], ids=lambda p: p.name)
def test_every_workload_meets_the_restricted_pod_security_standard(path):
    """A namespace that enforces it (`pod-security.kubernetes.io/enforce: restricted`) admits no
    pod without these: the workload would never start there."""
    for name, pod in _pods(path):
        assert not (pod.keys() & {"hostNetwork", "hostPID", "hostIPC"}), name
        assert all(volume.keys() - {"name"} <= RESTRICTED_VOLUMES for volume in pod.get("volumes", [])), name
        for container in pod["containers"]:
            context = pod.get("securityContext", {}) | container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser") not in (0, None), f"{where}: a user by number, not root"
            assert context.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged") is not True, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            assert set(context.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where


def test_the_image_runs_as_a_user_given_by_number():
    """Kubernetes' runAsNonRoot cannot check a user given by name: such a container never starts."""
    (user,) = re.findall(r"^USER (\S+)$", (CONFIGS.parent / "Dockerfile").read_text(), re.M)
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user


def test_the_sidecars_fluent_bit_has_an_output_for_every_tag_its_collectors_send():
    """Fluent Bit acks what its forward input took and drops a record no output matches: a tag
    without an output is lost in silence, with the collector's cursor already past it."""
    ((_, pod),) = _pods(SIDECAR)
    containers = pod["containers"]
    (agent,) = [c for c in containers if c["image"].startswith("fluent/fluent-bit")]
    config = FLUENT_BIT / Path(agent["args"][agent["args"].index("-c") + 1]).name
    assert f"--from-file=shipper_configs/fluent-bit/{config.name}" in SIDECAR.read_text()
    matches = [body["match"] for name, body in fluent_bit_yaml(config) if name == "OUTPUT"]
    sent = set()
    for container in containers:
        args = container.get("args", [])
        if args[:2] == ["tap", "fetch"]:
            sent |= {stream.tag for stream in STREAMS if stream.collection == "tap_api"}
        if args[:2] == ["pod", "stream"]:
            sent.add(BY_NAME["pod_" + args[args.index("--type") + 1]].tag)
    assert sent == {stream.tag for stream in STREAMS if stream.table in TAP | POD}, "all six tables"
    for tag in sent:
        assert any(fnmatch.fnmatchcase(tag, pattern) for pattern in matches), f"no output for {tag}"


# -- Fluent Bit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FB_YAML, ids=lambda p: p.name)
def test_fluent_bit_classic_twin_equals_the_yaml(path):
    assert fluent_bit_classic(path.with_suffix(".conf")) == fluent_bit_yaml(path)
    assert path.with_suffix(".conf").read_text() == classic_text(path)[0]  # regenerate: see agent_configs


@pytest.mark.parametrize("path", FB_YAML, ids=lambda p: p.name)
def test_fluent_bit_s3_outputs_cover_the_flows_tables_in_our_layout(path):
    outputs = [body for name, body in fluent_bit_yaml(path) if name == "OUTPUT" and body["name"] == "s3"]
    tables = set()
    for body in outputs:
        key = body["s3_key_format"]
        assert key.startswith("/"), "s3_key_format must start with /"
        (table,) = TABLE_IN_KEY.findall(key)
        assert table in BY_TABLE
        stream = BY_TABLE[table]
        # the collectors' tag, or the table itself where an exec variant re-tags by table
        assert body["match"] in (stream.tag, stream.table), f"{table} would get no records"
        assert key.endswith(".ndjson.gz" if stream.format == "ndjson" else ".log.gz")
        assert body["json_date_key"] == "false", "Fluent Bit would add a date key to every record"
        assert body["compression"] == "gzip"
        assert _size(body["total_file_size"]) >= 1024**2, "total_file_size under 1M is a fatal error"
        assert body.get("send_content_md5") == "true", "a bucket with Object Lock refuses uploads without it"
        if stream.format == "text":
            assert body.get("log_key") == "text", "a text table needs the raw normalised line"
        else:
            assert "log_key" not in body
        tables.add(table)
    assert tables == EXPECTED_TABLES[_kind(path)]
    store_dirs = [body["store_dir"] for body in outputs]
    assert len(set(store_dirs)) == len(store_dirs), "each S3 output needs its own store_dir"


@pytest.mark.parametrize("path", FB_YAML, ids=lambda p: p.name)
def test_fluent_bit_inputs_follow_the_known_rules(path):
    sections = fluent_bit_yaml(path)
    parsers = {body["name"] for name, body in sections if name == "PARSER"}
    for name, body in sections:
        if name == "INPUT" and body["name"] == "exec":
            assert body["oneshot"] == "true" and body["threaded"] == "true", "else nothing flows"
            assert _size(body["buf_size"]) >= 1024**2, "the 4 KiB default splits events"
            assert body.get("parser") in parsers, "an undeclared parser leaves raw lines"
            max_line = re.search(r"--max-line-bytes (\d+)", body["command"])
            assert max_line and int(max_line.group(1)) <= _size(body["buf_size"])
        if name == "INPUT" and body["name"] in ("forward", "tail", "tcp"):
            assert body["storage.type"] == "filesystem", "an ack must mean: on disk"
        if name == "INPUT" and body["name"] == "forward":
            assert body["listen"] == "127.0.0.1"
        if name == "INPUT" and body["name"] in ("tcp", "udp", "syslog"):  # reached from other hosts
            assert re.fullmatch(r"\$\{\w+\}", body["listen"]), "the user names the address to open"
        if name == "OUTPUT" and body["name"] == "forward":
            assert body["require_ack_response"] == "true"


# -- Vector --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", VECTOR, ids=lambda p: p.name)
def test_vector_sinks_cover_the_flows_tables_durably(path):
    config = yaml.safe_load(path.read_text())
    tables = set()
    for sink in config["sinks"].values():
        assert sink["type"] == "aws_s3"
        (table,) = TABLE_IN_KEY.findall("/" + sink["key_prefix"].split("/", 1)[1])
        stream = BY_TABLE[table]
        assert sink["encoding"]["codec"] == ("json" if stream.format == "ndjson" else "text")
        assert sink["compression"] == "gzip" and sink["buffer"]["type"] == "disk"
        assert sink["buffer"]["max_size"] >= 268435488, "Vector's smallest disk buffer"
        tables.add(table)
    assert tables == EXPECTED_TABLES[_kind(path)]
    assert config["acknowledgements"]["enabled"] is True
    for source in config["sources"].values():
        if source["type"] == "fluent":
            assert source["address"].startswith("127.0.0.1:")
        if source["type"] == "exec":
            assert source["mode"] == "streaming" and source["streaming"]["respawn_on_exit"] is True


def test_vector_routes_name_every_event_type_the_collectors_write():
    written = {"tap": {"messagesDelivered", "messagesBlocked", "clicksPermitted", "clicksBlocked"}}
    written["pod"] = {"pod_message", "pod_maillog"}
    written["collectors"] = written["tap"] | written["pod"]
    for path in VECTOR:
        config = yaml.safe_load(path.read_text())
        routes = [t for t in config.get("transforms", {}).values() if t["type"] == "route"]
        for route in routes:
            named = {re.search(r'"(\w+)"', condition).group(1) for condition in route["route"].values()}
            assert named == written[_kind(path)]


@pytest.mark.parametrize("path", [p for p in VECTOR if _kind(p) != "gateway"], ids=lambda p: p.name)
def test_each_vector_sink_takes_the_route_of_its_own_tables_events(path):
    """A sink fed by another table's route would file every event under the wrong table."""
    config = yaml.safe_load(path.read_text())
    for sink in config["sinks"].values():
        (table,) = TABLE_IN_KEY.findall("/" + sink["key_prefix"].split("/", 1)[1])
        (source,) = sink["inputs"]
        transform, _, route = source.partition(".")
        condition = config["transforms"][transform]["route"][route]
        assert condition == f'.eventType == "{EVENT_TYPES[table]}"', (table, condition)


# -- Fluentd -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((CONFIGS / "fluentd").glob("*.conf")), ids=lambda p: p.name)
def test_every_fluentd_buffer_is_on_disk(path):
    """in_tail moves its position once a record is in the next buffer: one held in memory is
    lost when Fluentd stops or crashes before it went on."""
    buffers = re.findall(r"<buffer[^>]*>(.*?)</buffer>", path.read_text(), re.S)
    assert buffers and all(re.search(r"^\s*@type file\b", body, re.M) for body in buffers)


@pytest.mark.parametrize("name", ["gateway.conf", "gateway-syslog.conf"])
def test_fluentd_gateway_writes_both_text_tables_through_the_exec_filter(name):
    text = (CONFIGS / "fluentd" / name).read_text()
    assert "@type exec_filter" in text and text.count("@type msgpack") == 2
    paths = re.findall(r'path "#\{ENV\[\'S3_PREFIX\'\]\}(/proofpoint_[a-z_]+/%Y/%m/%d/%H/)"', text)
    assert {TABLE_IN_KEY.match(p).group(1) for p in paths} == GATEWAY
    assert text.count("message_key text") == 2
