"""evaluate.py's rollout tasks as Ray tasks, on a local instance or a cluster (docs/design.md section 10).

Imported only for `--backend ray`, so Ray stays an optional extra.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import signal
import socket
import sys
import threading
from typing import Callable, Optional

import torch

from homoecon_lab import rollouts
from homoecon_lab.errors import RunError
from homoecon_lab.rollouts import Task
from homoecon_lab.runners import POLL_S, STOP_GRACE_S, check
from homoecon_lab.stopping import GracefulStop

CONNECT_TIMEOUT_S = 10.0  # a cluster's address must accept a connection within this
RAY_MISSING = '--backend ray needs Ray, an optional extra that is not installed: pip install -e ".[ray]"'


def require_ray():
    """The ``ray`` module, or a ValueError naming the extra to install (checked before any work starts)."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    if not hasattr(ray, "remote"):  # a folder named ray on sys.path (Ray's own /tmp/ray, in /tmp), not Ray
        raise ValueError(f"{RAY_MISSING} (here 'ray' is the folder {', '.join(ray.__path__)})")
    return ray


class _RayProgress:
    """A Ray actor counting the env steps the tasks report (fire and forget) until the parent takes them."""

    def __init__(self):
        self.steps = 0

    def add(self, steps: int) -> None:
        self.steps += steps

    def take(self) -> int:
        steps, self.steps = self.steps, 0
        return steps


def _ray_worker(task: Task, threads: int, paths: list[str], progress) -> bytes:
    """One task in a Ray worker; returns the pickled trace.

    ``paths`` is the parent's sys.path (absolute): entries missing here are appended, so a plug-in
    learner's module (found by the parent through its working directory or sys.path) is found here too,
    without shadowing this worker's own packages. On a cluster, the plug-in's module and ``--run``'s
    folder must be at the same paths on every node (a shared file system). The trace comes back pickled,
    as from a worker process: Ray's zero-copy NumPy arrays would be read-only.
    """
    for path in paths:
        if path not in sys.path:
            sys.path.append(path)
    torch.set_num_threads(threads)
    pending = [0]

    def report(done: int) -> None:  # batch the messages: one per 10 steps
        pending[0] += done
        if pending[0] >= 10:
            progress.add.remote(pending[0])
            pending[0] = 0

    result = rollouts.run_task(task, report)
    progress.add.remote(pending[0])
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) address where nothing answers, in CONNECT_TIMEOUT_S:
    ray.init retries one for many minutes, deaf to Ctrl-C. Other forms ("auto") are left to Ray."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\s\[\]]+?)\]?:(\d+)", address)
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise RunError(f"--address {address!r}: no Ray cluster answers there ({error.strerror or error})") from None


def connect_ray(ray, address: Optional[str]) -> bool:
    """Connect to the cluster at ``address`` (None: start a local instance) unless this process already is
    connected; True when this call connected (and so disconnects at the end).

    ray.init makes SIGTERM exit the process at once; the handler it replaced comes back.
    """
    if ray.is_initialized():
        return False
    if address is not None:
        _check_reachable(address)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RunError(f"--address {address!r}: cannot connect to a Ray cluster: {error}" if address else
                       f"cannot start a local Ray instance: {error}") from None
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    return True


def _ray_result(ray, ref, key: tuple, stop: GracefulStop) -> dict:
    """A finished task's trace; its error raised here as the worker raised it (a RunError names the task)."""
    try:
        return pickle.loads(ray.get(ref))
    except ray.exceptions.RayTaskError as error:
        check(stop)  # a task interrupted by the user's Ctrl-C is a stop, not a failure
        cause = error.cause
        if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
            raise cause from error  # the worker's traceback rides along, as from a process pool
        raise RunError(f"rollout {key}: {error}") from None
    except ray.exceptions.RayError as error:  # its worker died (killed, out of memory) or its node was lost
        check(stop)
        raise RunError(f"rollout {key}: the Ray task failed: {error}") from None


def _cancel_ray_tasks(ray, refs: list) -> None:
    """Drop queued tasks, interrupt running ones (KeyboardInterrupt at their next step), and kill the
    worker of one still running after STOP_GRACE_S."""
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, late = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
    for ref in late:
        ray.cancel(ref, force=True)


def run_on_ray(ray, tasks: list[Task], workers: int, threads: int, stop: GracefulStop,
                advance: Callable[[int], None]) -> dict:
    results: dict[tuple, dict] = {}
    progress = ray.remote(num_cpus=0)(_RayProgress).remote()
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_worker)
    paths = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    waiting = list(reversed(tasks))  # submitted in order, at most `workers` in flight
    running: dict = {}  # ObjectRef -> task key
    try:
        while waiting or running:
            check(stop)
            while waiting and len(running) < workers:
                task = waiting.pop()
                if task.run_dir is not None:  # a Ray worker has its own working directory
                    task = dataclasses.replace(task, run_dir=os.path.abspath(task.run_dir))
                running[remote.remote(task, threads, paths, progress)] = task.key
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in done:
                key = running.pop(ref)
                results[key] = _ray_result(ray, ref, key, stop)
            advance(ray.get(progress.take.remote()))
    except BaseException:  # a failed task or a stop: cancel every task now
        _cancel_ray_tasks(ray, list(running))
        raise
    finally:
        ray.kill(progress)
    return results
