"""`make golden`: (re)write tests/golden/*/*.expected.json from the current parser, and
tests/golden_assembly/*.expected.json from the current assembler.

The only writer of golden files. Review `git diff tests/golden tests/golden_assembly` before
committing what it wrote.
"""

import json
import sys

from proofpoint_shipper.gateway import render_text
from proofpoint_shipper.gateway.assembler import Assembler, AssemblySettings
from tests.conftest import GOLDEN_ASSEMBLY, golden_cases, golden_parser, read_lines

# The settings every assembly golden file was written with.
ASSEMBLY_SETTINGS = AssemblySettings(idle_timeout=600.0, max_open=1000, settle=2.0)


def expected_for(lines: list[str]) -> list[dict]:
    parser = golden_parser(fast=False)  # the grammars are the reference
    cases = []
    for line in lines:
        record, body = parser.parse_with_body(line)
        cases.append({"record": record, "text": render_text(record, body)})
    return cases


def assembled(lines: list[str]) -> dict:
    """The records the assembler gives for a case's lines, in order, and its counts."""
    parser, assembler = golden_parser(fast=False), Assembler(ASSEMBLY_SETTINGS)
    records = []
    for line in lines:
        records += assembler.feed(parser.parse(line))
    records += assembler.finish()
    return {
        "records": records,
        "counts": {"lines": assembler.lines, **dict(sorted(assembler.counts.items()))},
    }


def _write(target, value, root) -> None:
    text = json.dumps(value, indent=1, ensure_ascii=False) + "\n"
    changed = not target.exists() or target.read_text(encoding="utf-8") != text
    target.write_text(text, encoding="utf-8")
    print(f"{'wrote' if changed else 'same '} {target.relative_to(root)}")


def main() -> int:
    for case in golden_cases():
        _write(case.with_suffix(".expected.json"), expected_for(read_lines(case)), case.parents[2])
    for case in sorted(GOLDEN_ASSEMBLY.glob("*.log")):
        _write(case.with_suffix(".expected.json"), assembled(read_lines(case)), case.parents[1])
    print("review with: git diff tests/golden tests/golden_assembly", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
