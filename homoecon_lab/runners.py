"""Run many of evaluate.py's rollout tasks under one progress bar (docs/design.md sections 6 and 10).

`run_tasks` picks a backend: this process (one worker), a spawned process pool (the default) or Ray
tasks on a local instance or a cluster (`homoecon_lab.ray_runner`); every backend returns the same
traces. SIGTERM and SIGINT become a flag checked between steps, so a stop ends the workers cleanly.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import queue
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from homoecon_env.diagnostics.painter import exit_with_parent
from homoecon_lab import rollouts
from homoecon_lab.errors import StopRequested
from homoecon_lab.rollouts import Task
from homoecon_lab.stopping import GracefulStop

BACKENDS = ("process", "ray")
STOP_GRACE_S = 10.0  # a worker told to stop ends its rollout at its next step; one still running after this is killed
POLL_S = 0.3  # how often the parent checks for a stop, finished tasks and progress
_PROGRESS: Optional[multiprocessing.Queue] = None
_STOP = None  # shared byte, set to 1 by the parent: every worker ends its rollout at its next step


def run_tasks(tasks: list[Task], workers: int, threads: int, backend: str = "process",
              address: Optional[str] = None) -> dict[tuple, dict]:
    """Run every task under one tqdm bar counting env steps; return {task key: trace}.

    ``backend`` "process": in ``workers`` spawned processes when > 1, else in this process. "ray":
    as Ray tasks of one CPU each, at most ``workers`` at a time, on the Ray cluster at ``address``
    (None: a local instance that lives as long as this call). Every backend runs a task with
    ``threads`` torch threads and returns the same traces.

    SIGTERM and SIGINT only set a flag (homoecon_lab.stopping) that is checked between steps (one
    worker) or every POLL_S seconds (several): raising from wherever the signal lands could leave a
    lock of the executor held and hang the exit. A stop ends every worker (or cancels every Ray
    task), then raises `StopRequested`. A failed task raises its error (a `RunError` names the task).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "process":
        if workers == 1:
            return _stoppable(tasks, lambda stop, advance: _run_here(tasks, threads, stop, advance))
        return _stoppable(tasks, lambda stop, advance: _run_in_processes(tasks, workers, threads, stop, advance))
    from homoecon_lab.ray_runner import connect_ray, require_ray, run_on_ray

    ray = require_ray()
    owned = connect_ray(ray, address)  # before signals become a flag: Ctrl-C ends a connection that hangs
    try:
        return _stoppable(tasks, lambda stop, advance: run_on_ray(ray, tasks, workers, threads, stop, advance))
    finally:
        if owned:
            ray.shutdown()


def _stoppable(tasks: list[Task], run: Callable) -> dict[tuple, dict]:
    """``run(stop, advance)`` with SIGTERM/SIGINT as a flag (``stop``) and one bar (``advance``)."""
    with GracefulStop() as stop:
        with _progress_bar(tasks) as bar:
            results = run(stop, bar.update)
    if stop.signum is not None:  # came after the last check
        raise StopRequested(stop.signum, "the files already written are complete")
    return results


def check(stop: GracefulStop) -> None:
    """Raise StopRequested once SIGTERM or SIGINT has arrived."""
    if stop.signum is not None:
        raise StopRequested(stop.signum, "the files already written are complete")


@contextlib.contextmanager
def _progress_bar(tasks: list[Task]):
    """One tqdm bar over every task's env steps, full when the block ends without an error."""
    total = sum(task.train_steps + task.steps for task in tasks)
    with tqdm(total=total, desc="evaluate", unit="step", dynamic_ncols=True, mininterval=0.5) as bar:
        yield bar
        bar.update(total - bar.n)


def _run_here(tasks: list[Task], threads: int, stop: GracefulStop, advance: Callable[[int], None]) -> dict:
    torch.set_num_threads(threads)

    def report(done: int) -> None:
        advance(done)
        check(stop)

    return {task.key: rollouts.run_task(task, report) for task in tasks}


# -- backend "process": a spawned process pool ------------------------------------------------------
class _Stopped(Exception):
    """Raised in a worker whose parent asked it to stop; the parent drops the task."""


def _init_worker(threads: int, progress, stop) -> None:
    global _PROGRESS, _STOP
    exit_with_parent()  # a killed evaluate.py leaves no worker behind; SIGTERM/SIGINT are the parent's
    torch.set_num_threads(threads)
    _PROGRESS, _STOP = progress, stop


def _worker(task: Task) -> dict:
    pending = [0]

    def report(done: int) -> None:  # batch the messages: one per 10 steps
        if _STOP.value:
            raise _Stopped(task.key)
        pending[0] += done
        if pending[0] >= 10:
            _PROGRESS.put(pending[0])
            pending[0] = 0

    report(0)  # a task queued before the stop ends before building its learner
    result = rollouts.run_task(task, report)
    _PROGRESS.put(pending[0])
    return result


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor, stop, processes: list) -> None:
    """Drop queued tasks, end running ones at their next step, kill a worker still running after STOP_GRACE_S.

    The workers ignore SIGTERM (exit_with_parent), so only the flag or SIGKILL ends them; once they are
    gone the executor's manager thread ends too, so the interpreter's exit (which joins it) does not hang.
    """
    stop.value = 1
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in processes:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in processes:
        if worker.is_alive():
            worker.kill()
            worker.join()


def _run_in_processes(tasks: list[Task], workers: int, threads: int, stop: GracefulStop,
                      advance: Callable[[int], None]) -> dict:
    results: dict[tuple, dict] = {}
    context = multiprocessing.get_context("spawn")
    progress, stop_flag = context.Queue(), context.RawValue("b", 0)
    others = set(multiprocessing.active_children())
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                                                  initializer=_init_worker, initargs=(threads, progress, stop_flag))
    try:
        futures = {pool.submit(_worker, task): task.key for task in tasks}
        waiting = set(futures)
        while waiting:
            check(stop)
            done, waiting = concurrent.futures.wait(waiting, timeout=POLL_S)
            for future in done:
                results[futures[future]] = future.result()  # re-raises a worker's error here
            try:
                while True:
                    advance(progress.get_nowait())
            except queue.Empty:
                pass
    except BaseException:  # a failed task or a stop: drop every task, end the workers now
        _stop_workers(pool, stop_flag, list(set(multiprocessing.active_children()) - others))
        raise
    pool.shutdown(wait=True)
    return results
