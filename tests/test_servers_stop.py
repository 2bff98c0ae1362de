"""The local servers (`dev s3`, `simulate tap`, `simulate pod`) serve from threads of their own and
wait in the main thread for a stop signal: their threads must leave those signals to it."""

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import threads_taking_stop_signals


@pytest.mark.parametrize(
    "command", [["dev", "s3"], ["simulate", "tap"], ["simulate", "pod"]], ids=lambda c: " ".join(c)
)
def test_a_server_command_leaves_the_stop_signals_to_its_waiting_main_thread(command):
    """Taken by a serving thread, SIGTERM would not wake the main thread's wait: no exit."""
    env = {**os.environ, "TAP_PRINCIPAL": "p", "TAP_SECRET": "s", "POD_TOKEN": "t", "POD_CLUSTER_ID": "c"}
    argv = [sys.executable, "-m", "proofpoint_shipper", *command, "--port", "0"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as server:
        try:
            assert b"127.0.0.1" in server.stdout.readline(), "the banner with its address"
            assert threads_taking_stop_signals(server.pid) == []
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
        except BaseException:
            server.kill()
            raise
    assert server.returncode == 0, server.stderr.read().decode()[-1000:]
