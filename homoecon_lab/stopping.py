"""SIGTERM and SIGINT become a request the training loop honours between two steps (docs/design.md section 7).

Schedulers send SIGTERM, users press Ctrl-C (SIGINT). Either one only sets `GracefulStop.signum`;
the loop finishes the step it is in, writes a checkpoint when a step was taken since the last one,
ends the dashboard worker and closes the TensorBoard writer, then raises `StopRequested`.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """Context manager: while inside, SIGTERM/SIGINT set ``signum`` instead of ending the process.

    Handlers can only be set from the main thread; elsewhere (a sweep's worker thread) the process's
    own handling stays and ``signum`` stays None.
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
