"""Worker threads for the economy's blocked per-agent passes.

The heavy per-agent passes (the market's responses and Newton directions, the peer sample's
offsets, the own features) already run over cache-sized blocks of rows, each block writing only its
own rows. `BlockPool.run` hands contiguous runs of those blocks to threads: NumPy releases the GIL
inside its loops, so the threads use several cores, and every element is computed by the same
operations as on one thread, so the results are the same bits. Sums over whole rows stay outside
the pool, in one thread, in their usual order.

Threads: `torch.get_num_threads()` (what `--threads` and `torch.set_num_threads` set), at least
MIN_BLOCKS_PER_THREAD blocks each, so one thread below about 50,000 agents in the market (blocks of
16,384) and 12,000 in the peer sample (4,096 rows). They pay only where the cores are real: on the
2-vCPU development VM two threads, or two processes, get one core's throughput between them (two
in-cache NumPy loops: 0.55 s in two threads or two processes against 0.31 s for one alone), so
there the threaded passes run as fast as one thread, no faster.

The pool belongs to the object that uses it (an `Economy`): its executor is made on first use, left
out of a pickle or deepcopy (made again on the copy's first use), and made again in a forked child
(whose parent's threads do not exist there).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np
import torch

MIN_BLOCKS_PER_THREAD = 2  # a thread gets at least this many blocks: below, threads cost more than they save


class BlockPool:
    """Runs a pass over blocks of rows on up to ``threads`` threads (None: `torch.get_num_threads()`,
    read at each call, so `torch.set_num_threads` sets both). A pass of fewer than
    ``min_blocks_per_thread`` blocks per thread uses fewer threads; one of a single thread's worth runs
    in the calling thread alone."""

    def __init__(self, threads: Optional[int] = None, min_blocks_per_thread: int = MIN_BLOCKS_PER_THREAD):
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
        if not isinstance(min_blocks_per_thread, int) or min_blocks_per_thread < 1:
            raise ValueError(f"min_blocks_per_thread: expected an int >= 1, got {min_blocks_per_thread!r}")
        self.threads = threads
        self.min_blocks_per_thread = min_blocks_per_thread
        self._executor: Optional[ThreadPoolExecutor] = None
        self._workers = 0  # the executor's threads
        self._owner_pid = os.getpid()  # the process the executor's threads belong to

    def thread_count(self, num_blocks: int, threads: Optional[int] = None) -> int:
        """The threads a pass over ``num_blocks`` blocks uses (at most ``threads`` when given)."""
        wanted = threads or (self.threads if self.threads is not None else torch.get_num_threads())
        return max(1, min(wanted, num_blocks // self.min_blocks_per_thread))

    def run(self, work: Callable[[Sequence], object], blocks: Sequence, threads: Optional[int] = None) -> list:
        """``work(run)`` for contiguous runs of ``blocks`` covering them in order, one run per thread;
        returns the results in block order (a list with one result per run). ``work`` must write only
        to its own blocks' rows. Every run has finished when this returns (or raises the first error).
        ``threads`` caps the threads for this pass instead of the pool's own count (a caller that has set
        torch's threads to one for its kernels, as BatchedAdam does)."""
        count = self.thread_count(len(blocks), threads)
        if count == 1:
            return [work(blocks)]
        bounds = [len(blocks) * part // count for part in range(count + 1)]
        runs = [blocks[bounds[part]:bounds[part + 1]] for part in range(count)]
        errors = np.geterr()  # the caller's floating-point error handling (np.errstate), which threads do not inherit
        futures = [self._pool(count).submit(_with_errors, errors, work, run) for run in runs[1:]]
        try:
            first = work(runs[0])  # the calling thread takes the first run
        finally:
            for future in futures:  # wait for every run, even after an error: none may write after return
                future.exception()
        return [first] + [future.result() for future in futures]

    def _pool(self, count: int) -> ThreadPoolExecutor:
        if self._owner_pid != os.getpid():  # a forked child: the parent's threads are not here
            self._executor, self._workers, self._owner_pid = None, 0, os.getpid()
        if self._executor is None or self._workers < count - 1:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="homoecon-block")
            self._workers = count - 1
        return self._executor

    def close(self) -> None:
        """Stop the worker threads (a later pass makes new ones)."""
        if self._executor is not None and self._owner_pid == os.getpid():
            self._executor.shutdown(wait=True)
        self._executor, self._workers = None, 0

    def __getstate__(self) -> dict:
        return {"threads": self.threads, "min_blocks_per_thread": self.min_blocks_per_thread}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"BlockPool(threads={self.threads!r}, min_blocks_per_thread={self.min_blocks_per_thread})"


def _with_errors(errors: dict, work: Callable[[Sequence], object], run: Sequence):
    with np.errstate(**errors):
        return work(run)


def run_blocks(pool: Optional[BlockPool], work: Callable[[Sequence], object], blocks: Sequence) -> list:
    """``pool.run(work, blocks)``, or ``[work(blocks)]`` in the calling thread when ``pool`` is None."""
    if pool is None:
        return [work(blocks)]
    return pool.run(work, blocks)
