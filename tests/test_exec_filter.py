"""`ppship gateway exec-filter` as Fluentd runs it: msgpack through pipes, order kept, EOF ends it."""

import select
import signal
import subprocess
import sys
import threading

import msgpack

from tests.conftest import golden_lines

COMMAND = [sys.executable, "-m", "proofpoint_shipper", "gateway", "exec-filter", "--timezone", "UTC"]


def run_filter(items: list, *args: str) -> list:
    return run_filter_with_log(items, *args)[0]


def run_filter_with_log(items: list, *args: str) -> tuple[list, bytes]:
    """The maps that came back, and what the co-process wrote on stderr."""
    with subprocess.Popen(
        [*COMMAND, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:

        def feed():
            with child.stdin:
                for item in items:
                    child.stdin.write(msgpack.packb(item, use_bin_type=True))

        writer = threading.Thread(target=feed)
        writer.start()
        out = list(msgpack.Unpacker(child.stdout, raw=False, strict_map_key=False))
        writer.join()
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 0, stderr.decode()[-500:]
    return out, stderr


def test_100k_records_round_trip_in_order():
    lines = [line for line in golden_lines() if line]
    items = [{"seq": n, "log": lines[n % len(lines)]} for n in range(100_000)]
    out = run_filter(items)
    assert [o["seq"] for o in out] == list(range(100_000))
    assert all(o["raw"] == o["log"] for o in out)
    assert {o["stream"] for o in out} == {"gateway_filter", "gateway_sendmail", "other"}


def test_key_fallbacks_bytes_and_inputs_without_a_line():
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    out = run_filter([{"message": line}, {"log": line.encode()}, {"other": 1}, [1, 2]])
    assert out[0]["qid"] == "w3HMWjG3039079" and out[1]["fields"]["stat"] == "Sent"
    assert out[2] == {"other": 1, "error": "no gateway line under log or message"}
    assert out[3]["error"] == "input is not a map"
    custom = run_filter([{"line": line}], "--key", "line")
    assert custom[0]["stream"] == "gateway_sendmail"


# What Fluentd's in_syslog (and Fluent Bit's syslog parsers) make of a line: the header taken apart.
TAKEN_APART = {
    "host": "mx1",
    "ident": "sendmail",
    "pid": "21646",
    "message": "w3HMWjG3039079: to=<a@b>, stat=Sent",
}


def test_a_line_a_syslog_input_took_apart_is_told_not_filed_as_another_programs():
    filter_apart = {**TAKEN_APART, "ident": "filter_instance1", "message": "rprt s=a mod=session"}
    unrelated = {**TAKEN_APART, "ident": "sshd", "message": "Accepted publickey for admin"}
    whole = {"ident": "sendmail", "log": "Feb  3 08:35:00 mx1 sendmail[1]: w3HMWjG3039079: stat=Sent"}
    out, stderr = run_filter_with_log([TAKEN_APART, filter_apart, TAKEN_APART, unrelated, whole])
    told = "the agent's syslog input took the line apart (its program is under ident)"
    assert [o.get("error", "").startswith(told) for o in out] == [True, True, True, False, False]
    assert stderr.decode().count(told) == 1  # once: such a pipeline does it to every line
    assert (out[3]["stream"], out[4]["stream"]) == ("other", "gateway_sendmail")


def test_what_came_in_is_counted_on_stderr_at_the_end():
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    header_alone = line[:50]  # partial: no message after the header
    _, stderr = run_filter_with_log([{"log": line}, {"log": header_alone}, {"other": 1}, [1, 2]])
    assert stderr == (
        b"ppship gateway exec-filter: 4 inputs: gateway_filter 0 parsed; gateway_sendmail 1 parsed, "
        b"1 partial; other 0 parsed; 1 not maps; 1 without a line under log or message\n"
    )


def test_bytes_that_are_not_msgpack_end_it_with_one_line_after_what_came_before():
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    data = msgpack.packb({"log": line}) + b"\xc1\xc1" + msgpack.packb({"log": line})
    result = subprocess.run(COMMAND, input=data, capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert (
        result.stderr
        == b"ppship: error: stdin is not a msgpack stream: a byte that starts no msgpack object\n"
    )
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(result.stdout)
    (first,) = list(unpacker)
    assert first["qid"] == "w3HMWjG3039079"


def test_an_object_nested_past_msgpacks_depth_is_named_not_called_stackerror():
    deep = b"\x91" * 2000 + b"\xc0"  # 2,000 nested one-item arrays: past msgpack's 1,024 levels
    result = subprocess.run(COMMAND, input=deep, capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert (
        result.stderr == b"ppship: error: stdin is not a msgpack stream: nested deeper than msgpack reads\n"
    )


def test_an_object_cut_off_by_eof_is_one_error_line_not_dropped_quietly():
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    whole = msgpack.packb({"log": line})
    result = subprocess.run(COMMAND, input=whole + whole[:-7], capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    cut = len(whole) - 7
    expected = f"ppship: error: stdin ended in the middle of a msgpack object ({cut} bytes not read)\n"
    assert result.stderr == expected.encode()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(result.stdout)
    assert [record["qid"] for record in unpacker] == ["w3HMWjG3039079"]


def test_a_line_that_is_not_utf8_comes_back_marked_as_bytes_or_as_a_string():
    latin1 = "2022-02-20T08:35:00Z mx1 sendmail[1]: w3HMWjG3039079: stat=Envoy\xe9".encode("latin-1")
    as_str = b"\x81\xa3log\xd9" + bytes([len(latin1)]) + latin1  # a msgpack str that is not UTF-8
    result = subprocess.run(
        COMMAND, input=msgpack.packb({"log": latin1}) + as_str, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(result.stdout)
    outs = list(unpacker)
    assert len(outs) == 2  # one sent as bytes, one as a string
    for out in outs:
        assert (
            out["fields"]["stat"] == "Envoy\ufffd" and out["error"] == "invalid UTF-8 (replaced with U+FFFD)"
        )


def test_sigterm_writes_what_was_read_then_exits_0():
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        child.stdin.write(msgpack.packb({"n": 1, "log": line}) + msgpack.packb({"n": 2, "log": line})[:10])
        child.stdin.flush()  # a whole map, then the start of another; stdin stays open
        unpacker = msgpack.Unpacker(raw=False)
        assert select.select([child.stdout], [], [], 60)[0], "no map came back"
        unpacker.feed(child.stdout.read1(65536))  # the whole map came back: it was read
        child.send_signal(signal.SIGTERM)
        rest, stderr = child.stdout.read(), child.stderr.read()
        child.wait(timeout=60)
    unpacker.feed(rest)
    assert child.returncode == 0, stderr.decode()
    assert [item["n"] for item in unpacker] == [1]
    assert stderr == (
        b"ppship gateway exec-filter: stopped in the middle of a msgpack object (10 bytes not read)\n"
        b"ppship gateway exec-filter: 1 inputs (stopped early): gateway_filter 0 parsed; "
        b"gateway_sendmail 1 parsed; other 0 parsed\n"
    )


def test_sigterm_as_fluentd_stops_also_writes_what_the_pipe_held():
    """Fluentd's shutdown closes the co-process's stdin and sends SIGTERM right after. Here the
    co-process is busy writing its first read back (no one reads its stdout yet) while the rest
    waits in the pipe: that rest is Fluentd's no more, and comes back too."""
    line = "2022-02-20T08:35:00.157994-06:00 mx1 sendmail[1]: w3HMWjG3039079: to=<a@b>, stat=Sent"
    items = [{"n": n, "log": line} for n in range(1000)]  # over a 64 KiB read and a 64 KiB pipe
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        with child.stdin:
            child.stdin.write(b"".join(msgpack.packb(item) for item in items))
        assert not select.select([child.stderr], [], [], 1)[0]  # it is busy: stdout is full
        child.send_signal(signal.SIGTERM)
        out = list(msgpack.Unpacker(child.stdout, raw=False))
        stderr = child.stderr.read()
        child.wait(timeout=60)
    assert child.returncode == 0, stderr.decode()
    assert [item["n"] for item in out] == list(range(1000))
