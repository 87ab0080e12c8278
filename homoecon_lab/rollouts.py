"""evaluate.py's rollouts: one `Task` is one (optionally trained) rollout, recorded in a `Trace`.

`run_tasks` runs many tasks under one progress bar (docs/design.md section 6), in worker processes
(the default backend) or as Ray tasks, locally or on a cluster (backend "ray", docs/design.md section
10), with the same results. A learner that diverges or an action the economy refuses ends the task
with a `RunError` naming the task and the step (docs/design.md section 7); it reaches the caller from
the worker.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import queue
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from agents import LearnerConfig, make_learner, resolve_learner
from agents.checkpoint import load_checkpoint
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy
from homoecon_env.core.lifecycle import ALIVE, DEATH_CAUSES
from homoecon_env.diagnostics import analysis, communication, metrics
from homoecon_env.diagnostics.painter import exit_with_parent
from homoecon_lab.errors import RunError, StopRequested
from homoecon_lab.seeding import seed_everything
from homoecon_lab.settings import read_run_config
from homoecon_lab.stopping import GracefulStop

GRAPH_SNAPSHOTS = 25  # favourite graphs and wealth cross-sections recorded per main rollout
COMMUNICATION_STEPS = 20  # late-window steps whose messages get the communication metrics (evenly spaced)
INFLUENCE_EVERY = 4  # every 4th of those steps also measures the listeners' causal influence (costly)


@dataclass(frozen=True)
class Task:
    """One rollout (optionally after a short training phase); runs in a worker process."""

    key: tuple  # ("main", k) or ("ablation", learner, heterogeneous tastes, seed index)
    economy: EconomyConfig
    learner: str  # a name in agents.LEARNERS, a plug-in's "module:ClassName", or "run" for the trained run's learner
    learner_config: LearnerConfig
    economy_seed: int  # seed of the recorded rollout
    steps: int  # recorded steps
    learn: bool  # update weights during the recorded rollout
    run_dir: Optional[str] = None
    train_seed: int = 0  # economy seed of the training phase
    train_steps: int = 0  # 0: no training phase
    detail: bool = False  # record everything the figures need
    frames: int = 0


def build_learner(task: Task):
    """A fresh learner, or the trained run's learner restored from its checkpoint.

    In a worker a plug-in's module is imported again (a spawned process starts with the parent's sys.path
    and working directory; a Ray task appends the parent's sys.path); a failure is a RunError naming the task."""
    name = task.learner
    try:
        if name == "run":
            name = read_run_config(os.path.join(task.run_dir, "config.json")).run.learner
        resolve_learner(name)
    except ValueError as error:
        raise RunError(f"rollout {task.key}: {error}") from None
    learner = make_learner(name, task.economy, task.learner_config)
    if task.learner != "run":
        return learner
    learner.load_state_dict(load_checkpoint(os.path.join(task.run_dir, "checkpoint.pt"))["learner"])
    return learner

# -- recording ------------------------------------------------------------------------------------
class Trace:
    """What a rollout leaves behind: per-step figures always; with ``detail``, everything the figures,
    the genealogy and the report need (time series, favourite graphs, wealth cross-sections, frames).

    Arrays are NumPy, so a Trace pickles cheaply back from a worker process.
    """

    def __init__(self, economy: Economy, steps: int, detail: bool, frames: int):
        config = economy.config
        self.config, self.steps, self.detail = config, steps, detail
        n = config.num_agents
        self.series: dict[str, list] = {key: [] for key in ("reward", "gini", "trade_volume", "births", "deaths_age",
                                                            "deaths_starvation")}
        self.jobs = np.zeros((steps, n), dtype=np.int16)  # [T, N] job chosen by the row's acting agent
        self.ids = np.zeros((steps, n), dtype=np.int64)  # [T, N] acting agent id of each row
        if not detail:
            return
        self.series.update({key: [] for key in ("totals", "prices", "job_shares", "spectra", "participation_ratio",
                                                "attention_entropy", "entropy_nats")})
        evenly = lambda count: set(np.unique(np.linspace(1, steps, min(count, steps)).round().astype(int)).tolist())  # noqa: E731
        self.snapshot_steps = evenly(GRAPH_SNAPSHOTS)
        self.frame_steps = evenly(frames)
        late = analysis.edge_windows(steps)[1]  # 0-based [start, stop): steps start + 1 .. stop, 1-based
        self.communication_steps = set(np.unique(np.linspace(late.start + 1, late.stop, min(
            COMMUNICATION_STEPS, late.stop - late.start)).round().astype(int)).tolist())
        self.communication: dict[str, list] = {key: [] for key in ("step", *communication.STEP_KEYS)}
        self.influence_steps = set(sorted(self.communication_steps)[::INFLUENCE_EVERY])
        self.influence: dict[str, list] = {"influence_step": [], "causal_influence": []}
        self.graphs: list[dict] = []  # one per snapshot step
        self.cross_sections: list[dict] = []  # [N] arrays per snapshot step
        self.frames: list[dict] = []  # pre/post trade holdings and prices at frame steps
        self.final: dict = {}
        state = economy.state
        self.agents: dict[int, dict] = {}  # agent id -> genealogy record
        for slot in range(n):
            self._born(int(state.agent_ids[slot]), (), 0, 0, slot, state.utility_weights[slot], founder=True)
        self.lifetime_reward: dict[int, float] = {}

    def record_influence(self, t: int, learner, observation) -> None:
        """Before step t is acted: the learner's causal influence on ``observation`` (the one it will
        act on), measured on copies (communication.learner_influence), at the sampled influence steps."""
        if not self.detail or t not in self.influence_steps:
            return
        config = self.config
        value = communication.learner_influence(learner, observation, config.broadcast_dim, config.num_jobs,
                                                np.random.default_rng(t))
        self.influence["influence_step"].append(t)
        self.influence["causal_influence"].append(value)

    def _born(self, agent, parents, generation, step, slot, tastes, founder=False) -> None:
        self.agents[agent] = {"parents": tuple(parents), "generation": int(generation), "birth_step": int(step),
                              "slot": int(slot), "tastes": [float(w) for w in tastes], "initial": founder,
                              "death_step": None, "death_cause": ""}

    def record(self, t: int, before, observation, actions, out, economy: Economy, attention) -> None:
        """Record step t (1-based): ``before`` is the state the agents acted in."""
        stats = economy.last_stats
        for key in ("gini", "trade_volume", "births", "deaths_age", "deaths_starvation"):
            self.series[key].append(float(stats[key]))
        self.series["reward"].append(float(out.reward.mean()))
        self.jobs[t - 1] = actions.job.numpy()
        self.ids[t - 1] = out.acting_ids.numpy()
        if not self.detail:
            return
        config = self.config
        self.series["totals"].append(np.asarray(stats["totals"], dtype=np.float64))
        self.series["prices"].append(np.asarray(stats["prices"], dtype=np.float64))
        self.series["job_shares"].append(np.asarray(stats["job_counts"], dtype=np.float64) / config.num_agents)
        broadcasts = actions.broadcast.double().numpy()  # [N, B] messages sent this step
        spectrum = metrics.covariance_spectrum(broadcasts)
        self.series["spectra"].append(spectrum)
        self.series["participation_ratio"].append(metrics.participation_ratio(spectrum))
        mask = observation.peer_mask.numpy()
        weights = None if attention is None else attention.detach().double().numpy()  # [N, K]
        self.series["attention_entropy"].append(np.nan if weights is None else
                                                metrics.attention_entropy(weights, mask, normalised=True))
        self.series["entropy_nats"].append(np.nan if weights is None else metrics.attention_entropy(weights, mask))

        # Per-agent figures of this step.
        reward = out.reward.numpy()
        for agent, value in zip(out.acting_ids.tolist(), reward.tolist()):
            self.lifetime_reward[agent] = self.lifetime_reward.get(agent, 0.0) + value
        before_trade, after_trade = out.pre_trade.numpy(), out.trade.allocation.numpy()  # [N, R]
        if t in self.snapshot_steps and weights is not None:
            self.graphs.append(analysis.graph_snapshot(t, weights, observation.peer_index.numpy(), mask,
                                                       after_trade.sum(axis=1)))
        if t in self.snapshot_steps:
            self.cross_sections.append({
                "step": t, "wealth": after_trade.sum(axis=1), "age": before.ages.numpy().astype(np.float64),
                "taste": before.utility_weights.numpy().copy(), "job": actions.job.numpy().copy(),
                "effort": actions.effort.double().numpy().copy(),
                "generation": before.generation.numpy().astype(np.float64)})
        if t in self.communication_steps:  # its own generator per step: leaves every other stream alone
            values = communication.step_summary(
                broadcasts, before.holdings.numpy(), before.utility_weights.numpy(), actions.job.numpy(),
                config.num_jobs, np.random.default_rng(t))
            self.communication["step"].append(t)
            for key, value in values.items():
                self.communication[key].append(value)
        if t in self.frame_steps:
            self.frames.append({"step": t, "before": before_trade, "after": after_trade,
                                "prices": out.trade.prices.numpy().copy()})
        if t == self.steps:  # the last step's population, for the snapshot figures
            self.final = {"ages": before.ages.numpy(), "broadcasts": broadcasts, "jobs": actions.job.numpy(),
                          "attention": weights, "peer_index": observation.peer_index.numpy(),
                          "effort": out.effort.numpy(), "consumption": out.consumed.numpy(),
                          "holdings_before": before_trade, "holdings_after": after_trade}

        # Genealogy: deaths of acting agents, then newborns in their slots.
        cause = out.death_cause.numpy()
        for slot in np.flatnonzero(cause != ALIVE).tolist():
            record = self.agents[int(out.acting_ids[slot])]
            record["death_step"], record["death_cause"] = t, DEATH_CAUSES[int(cause[slot])]
        state = economy.state
        for slot in out.births.born.nonzero().squeeze(1).tolist():
            parents = [int(p) for p in state.parent_ids[slot].tolist() if p >= 0]
            self._born(int(state.agent_ids[slot]), parents, int(state.generation[slot]), t, slot,
                       state.utility_weights[slot])

    def result(self, economy: Economy) -> dict:
        """Plain arrays and records (picklable); ``economy`` is the economy after the last step."""
        data = {key: np.asarray(values) for key, values in self.series.items()}
        data.update(jobs=self.jobs, ids=self.ids)
        if self.detail:
            state = economy.state
            data.update(graphs=self.graphs, cross_sections=self.cross_sections, frames=self.frames, final=self.final,
                        agents=self.agents, lifetime_reward=self.lifetime_reward,
                        alive_at_end=state.agent_ids[state.alive].tolist(),
                        communication={key: np.asarray(values, dtype=np.float64)
                                       for key, values in {**self.communication, **self.influence}.items()})
        return data


def _guarded_step(task: Task, phase: str, t: int, learner, economy: Economy, observation, learn: bool):
    """One step (act, step, learn when ``learn``); a diverging learner or a refused action becomes a
    RunError naming the task, the phase and the step."""
    try:
        actions = learner.act(observation)
        out = economy.step(actions)
        if learn:
            learner.update(out)
    except ValueError as error:  # NonFiniteLossError included
        raise RunError(f"rollout {task.key}, {phase} step {t}: {error}") from None
    learner.on_births(out.births)  # inheritance is part of the economy, frozen or not
    return actions, out


def run_task(task: Task, report: Callable[[int], None]) -> dict:
    """Train (if asked) then record one rollout. ``report(k)`` is told of every k steps done."""
    seed_everything(task.learner_config.seed)
    learner = build_learner(task)
    if task.train_steps:
        economy = Economy(task.economy.replace(max_steps=task.train_steps))
        observation = economy.reset(seed=task.train_seed)
        for t in range(1, task.train_steps + 1):
            _, out = _guarded_step(task, "training", t, learner, economy, observation, True)
            observation = out.observation
            report(1)
    economy = Economy(task.economy.replace(max_steps=task.steps))
    observation = economy.reset(seed=task.economy_seed)
    trace = Trace(economy, task.steps, task.detail, task.frames)
    for t in range(1, task.steps + 1):
        before = economy.state
        trace.record_influence(t, learner, observation)
        actions, out = _guarded_step(task, "recorded", t, learner, economy, observation, task.learn)
        trace.record(t, before, observation, actions, out, economy, getattr(learner, "last_attention", None))
        observation = out.observation
        report(1)
    return trace.result(economy)


# -- running tasks (in parallel, with one progress bar) ---------------------------------------------
# One function per backend behind `run_tasks`: `_run_here` (one worker), `_run_in_processes` (the
# default) and `_run_on_ray`. Each takes the tasks, the stop flag and ``advance`` (the bar's update)
# and returns {task key: trace}; Ray is imported only inside the Ray backend.
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
    ray = require_ray()
    owned = _connect_ray(ray, address)  # before signals become a flag: Ctrl-C ends a connection that hangs
    try:
        return _stoppable(tasks, lambda stop, advance: _run_on_ray(ray, tasks, workers, threads, stop, advance))
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


def _check(stop: GracefulStop) -> None:
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
        _check(stop)

    return {task.key: run_task(task, report) for task in tasks}


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
    result = run_task(task, report)
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
            _check(stop)
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


# -- backend "ray": Ray tasks on a local instance or a cluster ------------------------------------
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

    result = run_task(task, report)
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


def _connect_ray(ray, address: Optional[str]) -> bool:
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
        _check(stop)  # a task interrupted by the user's Ctrl-C is a stop, not a failure
        cause = error.cause
        if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
            raise cause from error  # the worker's traceback rides along, as from a process pool
        raise RunError(f"rollout {key}: {error}") from None
    except ray.exceptions.RayError as error:  # its worker died (killed, out of memory) or its node was lost
        _check(stop)
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


def _run_on_ray(ray, tasks: list[Task], workers: int, threads: int, stop: GracefulStop,
                advance: Callable[[int], None]) -> dict:
    results: dict[tuple, dict] = {}
    progress = ray.remote(num_cpus=0)(_RayProgress).remote()
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_worker)
    paths = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    waiting = list(reversed(tasks))  # submitted in order, at most `workers` in flight
    running: dict = {}  # ObjectRef -> task key
    try:
        while waiting or running:
            _check(stop)
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
