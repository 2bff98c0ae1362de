"""Throttled: a flood of one kind of log line becomes ten lines and a count per period."""

import logging

from proofpoint_shipper.logs import Throttled


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_over_the_burst_are_counted_and_told_when_the_period_ends(caplog):
    clock = Clock()
    throttled = Throttled(
        logging.getLogger("test.throttled"), logging.ERROR, "{count} more in {seconds} s", 3, 60, clock
    )
    with caplog.at_level(logging.ERROR, "test.throttled"):
        for number in range(8):
            throttled.log("line %d", number)
        clock.now = 30.0
        throttled.tell_due()
        assert caplog.messages == ["line 0", "line 1", "line 2"]  # the period has not ended
        clock.now = 61.0
        throttled.tell_due()
        throttled.log("line %d", 8)  # a new period: told again
        throttled.close()
    assert caplog.messages == ["line 0", "line 1", "line 2", "5 more in 61 s", "line 8"]


def test_close_tells_what_is_held_and_nothing_when_nothing_is(caplog):
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.throttled"), logging.ERROR, "{count} held", 1, 60, clock)
    with caplog.at_level(logging.ERROR, "test.throttled"):
        throttled.close()
        throttled.log("a")
        throttled.log("b")
        throttled.close()
        throttled.close()
    assert caplog.messages == ["a", "1 held"]
