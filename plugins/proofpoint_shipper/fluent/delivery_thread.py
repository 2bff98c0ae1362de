"""DeliveryThread: the relay's one thread for deliveries, which a stop need not wait out.

An executor (for `loop.run_in_executor`) of one daemon thread. ThreadPoolExecutor's threads are
joined at exit: an upload whose answer never comes (a path to S3 that swallows requests) held
the relay's stop for the upload's read timeout and every retry after it, minutes past
--drain-seconds. A stop waits `finished_within(seconds)` for this thread instead, then leaves it:
what it delivers was not acked, and its clients send it again.
"""

import queue
import threading
from concurrent.futures import Executor, Future

from proofpoint_shipper.service import start_daemon_thread


class DeliveryThread(Executor):
    def __init__(self, name: str):
        self.name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._shut_down = False
        self._thread: threading.Thread | None = None  # started by the first call, as an executor's

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._shut_down:
            raise RuntimeError("the delivery thread is shut down")
        if self._thread is None:
            self._thread = start_daemon_thread(self._work, self.name)
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to whoever waits on the future, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with `cancel_futures`, those not begun are cancelled."""
        self._shut_down = True
        while cancel_futures:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        self._calls.put(None)
        if wait and self._thread is not None:
            self._thread.join()

    def finished_within(self, seconds: float) -> bool:
        """After shutdown: whether the call under way (if any) ended within `seconds`."""
        if self._thread is None:
            return True
        self._thread.join(seconds)
        return not self._thread.is_alive()
