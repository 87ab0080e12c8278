"""Figures drawn in a worker process, so that a training loop keeps its core while matplotlib works.

A dashboard takes about 1.5 s to draw at 50 agents, as long as several hundred training steps.
`BackgroundPainter` hands the drawing to one spawned worker process (on a 2-core machine the
otherwise idle core) and returns the images in the order they were asked for.

The worker never outlives its parent: it ignores SIGINT and SIGTERM (the parent, which receives
them too from a terminal or a scheduler's process-group kill, decides when to stop it) and a watcher
thread ends it as soon as the parent process is gone, even after a SIGKILL of the parent.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Optional

import numpy as np


def exit_with_parent() -> None:
    """Worker initializer: leave SIGINT/SIGTERM to the parent; exit as soon as the parent process ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])  # ready once the parent has exited
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class BackgroundPainter:
    """Runs ``draw(*args) -> image`` in a worker process; `finished` yields the images in order.

    ``draw`` must be a module-level function (the worker imports it). The worker starts on the
    first `submit` ("spawn": a fresh interpreter, safe next to torch's threads).
    """

    def __init__(self, draw: Callable[..., np.ndarray]):
        self.draw = draw
        self._pool: Optional[ProcessPoolExecutor] = None
        self._pending: list[tuple[Any, Future]] = []

    def submit(self, key, *args) -> None:
        """Start drawing ``draw(*args)``; `finished` later returns it as (key, image)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=exit_with_parent)
        self._pending.append((key, self._pool.submit(self.draw, *args)))

    def finished(self, wait: bool = False) -> list[tuple[Any, np.ndarray]]:
        """The images drawn so far, oldest first, stopping at the first one still being drawn (all of
        them with ``wait``). A drawing that failed raises its exception here."""
        done = []
        while self._pending and (wait or self._pending[0][1].done()):
            key, future = self._pending.pop(0)
            done.append((key, future.result()))
        return done

    def close(self) -> None:
        """Stop the worker (after the drawing in progress, if any); drawings not yet returned are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = []
