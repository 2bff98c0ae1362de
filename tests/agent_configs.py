"""Reading the shipped agent configs, for the tests that hold them to account.

Fluent Bit configs come in YAML with a classic `.conf` twin; both are read into the same
(section, {key: value}) list, so a test can prove the twins equal. `python -m tests.agent_configs`
writes every twin from its YAML (the YAML is the source): review `git diff` before committing.
"""

import re
import shlex
import sys
from pathlib import Path

import yaml

CONFIGS = Path(__file__).parent.parent / "shipper_configs"
FLUENT_BIT = CONFIGS / "fluent-bit"
SECTIONS = {"inputs": "INPUT", "filters": "FILTER", "outputs": "OUTPUT"}


def fluent_bit_yaml(path: Path) -> list[tuple[str, dict[str, str]]]:
    document = yaml.safe_load(path.read_text())
    sections = [("SERVICE", _strings(document.get("service", {})))]
    sections += [("PARSER", _strings(parser)) for parser in document.get("parsers", [])]
    for plural, name in SECTIONS.items():
        sections += [(name, _strings(item)) for item in document.get("pipeline", {}).get(plural, [])]
    return sections


def _strings(mapping: dict) -> dict[str, str]:
    """Values as Fluent Bit reads them: a YAML boolean is the word true or false."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[str(key).lower()] = str(value)
    return out


def fluent_bit_classic(path: Path) -> list[tuple[str, dict[str, str]]]:
    """[SECTION] blocks of `key value` lines; a `parsers_file` is read in as PARSER sections."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        header = re.fullmatch(r"\[([A-Z]+)\]", text)
        if header:
            sections.append((header.group(1), {}))
            continue
        key, _, value = text.partition(" ")
        sections[-1][1][key.lower()] = value.strip()
    service = dict(sections[0][1]) if sections and sections[0][0] == "SERVICE" else {}
    parsers_file = service.pop("parsers_file", None)
    if parsers_file:
        sections[0] = ("SERVICE", service)
        parsers = fluent_bit_classic(path.parent / parsers_file)
        sections[1:1] = parsers
    return sections


def classic_text(yaml_path: Path) -> tuple[str, str | None]:
    """The .conf twin of a YAML config, and its parsers file's text if it declares parsers."""
    head = [line for line in yaml_path.read_text().splitlines() if line.startswith("#")]
    run_yaml, run_conf = (
        f"-c shipper_configs/fluent-bit/{yaml_path.stem}{ext}" for ext in (".yaml", ".conf")
    )
    head = [line.replace(run_yaml, run_conf) for line in head]
    sections = fluent_bit_yaml(yaml_path)
    parsers = [body for name, body in sections if name == "PARSER"]
    blocks, parsers_name = [], None
    for name, body in sections:
        if name == "PARSER":
            continue
        if name == "SERVICE" and parsers:
            parsers_name = f"{yaml_path.stem}.parsers.conf"
            body = {**body, "parsers_file": parsers_name}
        blocks.append(_block(name, body, _comments(yaml_path)))
    parsers_head = (
        f"# Parsers for {yaml_path.stem}.conf, read through its parsers_file.\n"
        f"# Run:  fluent-bit -c shipper_configs/fluent-bit/{yaml_path.stem}.conf (this file beside it)\n"
        "# Docs: https://docs.fluentbit.io/manual/pipeline/parsers/configuring-parser\n\n"
    )
    parsers_text = parsers_head + "\n".join(_block("PARSER", body) for body in parsers) if parsers else None
    return "\n".join(head) + "\n\n" + "\n".join(blocks), parsers_text


def _block(name: str, body: dict[str, str], comments: dict[tuple[str, str], str] | None = None) -> str:
    width = max(len(key) for key in body) + 1
    lines = []
    for key, value in body.items():
        comment = (comments or {}).get((key, value))
        if comment:  # the classic format has no comments after a value: on the line above
            lines.append(f"    # {comment}\n")
        lines.append(f"    {key.ljust(width)}{value}\n")
    return f"[{name}]\n" + "".join(lines)


def _comments(yaml_path: Path) -> dict[tuple[str, str], str]:
    """(key, value) → the comment after it on its YAML line, so the twin keeps units and reasons."""
    found = {}
    for line in yaml_path.read_text().splitlines():
        match = re.match(r"\s*(?:- )?([\w.]+): (.+?)\s+# (.+)$", line)
        if match and not line.lstrip().startswith("#"):
            found[match.group(1).lower(), match.group(2).strip()] = match.group(3)
    return found


def ppship_commands(path: Path) -> list[list[str]]:
    """Every ppship command line in a config file, split as a shell would."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        found: list[list[str]] = []
        for document in yaml.safe_load_all(text):
            _walk_for_commands(document, found)
        return found
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines (systemd, shell)
    if "@" in path.name:  # a systemd template: one command per instance its header enables
        instances = sorted(set(re.findall(rf"{re.escape(path.name.split('@')[0])}@(\w+)", text)))
        joined = "\n".join(joined.replace("%i", instance) for instance in instances)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0]
        at = re.search(r"(?:^|[\s=/])(ppship\s.*)$", line)
        if at and not line.lstrip().startswith("#"):
            commands.append(shlex.split(at.group(1)))
    return commands


def _walk_for_commands(node, found: list[list[str]]) -> None:
    if isinstance(node, dict):
        if str(node.get("image", "")).startswith("proofpoint-shipper"):
            found.append(["ppship", *node.get("args", [])])  # the image's entrypoint is ppship
            return
        for value in node.values():
            _walk_for_commands(value, found)
    elif isinstance(node, list):
        if node and node[0] == "ppship" and all(isinstance(item, str) for item in node):
            found.append(list(node))
        else:
            for item in node:
                _walk_for_commands(item, found)
    elif isinstance(node, str) and re.search(r"(?:^|\s)ppship\s", node):
        for line in node.splitlines():
            at = re.search(r"(?:^|\s)(ppship\s.*)$", line.split(" #", 1)[0])
            if at:
                found.append(shlex.split(at.group(1)))


def write_twins() -> None:
    for yaml_path in sorted(FLUENT_BIT.glob("*.yaml")):
        text, parsers = classic_text(yaml_path)
        yaml_path.with_suffix(".conf").write_text(text)
        if parsers is not None:
            (FLUENT_BIT / f"{yaml_path.stem}.parsers.conf").write_text(parsers)
        print(f"wrote {yaml_path.with_suffix('.conf').name}", file=sys.stderr)


if __name__ == "__main__":
    write_twins()
