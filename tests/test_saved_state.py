"""Saved state this version did not write (hand-edited, cut short, another tool's file) stops a
command with one line naming the file and what to do, never a traceback on every start."""

import os
import subprocess
import sys

import pytest

CURSORS = {
    "tap": [
        '{"cursor": 5}',
        '{"cursor": "yesterday"}',
        '{"cursor": "2022-02-20T08:00:00"}',  # no offset: cannot be compared with the clock
        '{"pending": [[1]]}',
        '{"pending": [["2022-02-20T09:00:00+00:00", "2022-02-20T08:00:00+00:00"]]}',  # reversed
        '{"pending": [["2022-02-20T08:00:00+00:00", "2022-02-20T10:00:00+00:00"]]}',  # over an hour
        '{"pending": [["2022-02-20T08:00:00", "2022-02-20T08:30:00"]]}',
        '{"seen": 5}',
        "[]",
        '{"last_ts": null, "recent": []}',  # another command's file
    ],
    "pod": [
        '{"recent": 5}',
        '{"recent": [1]}',
        '{"last_ts": {}}',
        '{"last_ts": "yesterday", "recent": []}',  # a string, but no time
        "7",
        '{"cursor": "2022-02-20T08:00:00+00:00"}',  # the TAP cursor
        '{"type": "maillog", "last_ts": null, "recent": []}',  # the other type's: run with --type message
    ],
    "follow": ['{"offset": "abc"}', '{"offset": -5}', '["x"]', '{"cursor": "2022-02-20T08:00:00+00:00"}'],
}
COMMANDS = {
    "tap": ["tap", "fetch", "--cursor", "{state}", "--base-url", "http://127.0.0.1:9"],
    "pod": ["pod", "stream", "--type", "message", "--cursor", "{state}", "--url", "ws://127.0.0.1:9/"],
    "follow": ["gateway", "parse", "--follow", "{log}", "--position-file", "{state}"],
}
CASES = [(kind, content) for kind, contents in CURSORS.items() for content in contents]


@pytest.mark.parametrize("kind, content", CASES, ids=[f"{kind} {content}" for kind, content in CASES])
def test_unreadable_saved_state_is_one_line_and_exit_2(tmp_path, kind, content):
    state, log = tmp_path / "state.json", tmp_path / "gateway.log"
    state.write_text(content)
    log.write_text("x\n")
    args = [arg.format(state=state, log=log) for arg in COMMANDS[kind]]
    env = {**os.environ, "TAP_PRINCIPAL": "p", "TAP_SECRET": "s", "POD_TOKEN": "t", "POD_CLUSTER_ID": "c"}
    result = subprocess.run(
        [sys.executable, "-m", "proofpoint_shipper", *args], capture_output=True, timeout=60, env=env
    )
    assert result.returncode == 2, result.stderr.decode()[-800:]
    (line,) = [line for line in result.stderr.decode().splitlines() if line.startswith("ppship: error:")]
    assert "Traceback" not in result.stderr.decode()
    assert str(state) in line or "move it aside" in line
