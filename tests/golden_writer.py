"""`make golden`: (re)write tests/golden/*/*.expected.json from the current parser.

The only writer of golden files. Review `git diff tests/golden` before committing what it wrote.
"""

import json
import sys

from proofpoint_shipper.gateway import render_text
from tests.conftest import golden_cases, golden_parser, read_lines


def expected_for(lines: list[str]) -> list[dict]:
    parser = golden_parser(fast=False)  # the grammars are the reference
    cases = []
    for line in lines:
        record, body = parser.parse_with_body(line)
        cases.append({"record": record, "text": render_text(record, body)})
    return cases


def main() -> int:
    for case in golden_cases():
        target = case.with_suffix(".expected.json")
        text = json.dumps(expected_for(read_lines(case)), indent=1, ensure_ascii=False) + "\n"
        changed = not target.exists() or target.read_text(encoding="utf-8") != text
        target.write_text(text, encoding="utf-8")
        print(f"{'wrote' if changed else 'same '} {target.relative_to(case.parents[2])}")
    print("review with: git diff tests/golden", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
