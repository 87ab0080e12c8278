"""The training loop: `train(settings)` runs (or continues) one run in its folder (docs/design.md section 6).

The loop drives the batched `Economy` directly (one tensor row per agent slot). When an episode
reaches `max_steps` the economy is refounded with a seed derived from the run seed and the episode
index, and the learner carries on: the new founders take over the slots' networks.

Output in the run folder: config.json, TensorBoard event files (x axis = env steps, tags in
`homoecon_lab.recorder`), final_metrics.json once the run is complete (means over its last 10% of
steps, `Recorder.final_metrics`) and checkpoint.pt (atomic, checksummed, plain data; everything needed to
continue bit-exactly, every RNG included). Failures end with one exception whose message names the
step and what is kept (docs/design.md section 7): `NonFiniteLossError` when the learner diverges,
`RunError` for a refused step, an occupied run folder or a failed write, `StopRequested` on
SIGTERM/SIGINT (after a final checkpoint).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from typing import Optional

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents import make_learner
from agents.base import Learner, NonFiniteLossError, executed_actions
from agents.checkpoint import load_checkpoint, save_checkpoint
from homoecon_env.core import Economy
from homoecon_env.diagnostics import plots
from homoecon_env.diagnostics.painter import BackgroundPainter
from homoecon_env.files import atomic_write_text
from homoecon_lab import rundir
from homoecon_lab.errors import ResumeError, RunError, StopRequested
from homoecon_lab.recorder import Recorder, hyperparameter_table
from homoecon_lab.seeding import episode_seed, rng_states, seed_everything, set_rng_states
from homoecon_lab.settings import Settings, default_threads
from homoecon_lab.stopping import GracefulStop


def complete_run_settings(settings: Settings) -> Settings:
    """Fill the run's derived fields: run_name, run_dir (runs/<run_name>) and the thread count.

    The default run_name starts with the learner's name (a plug-in's class name, without its module)."""
    run = settings.run
    label = run.learner.rpartition(":")[2]  # a plug-in's class name: no ':' in folder names (TensorBoard's logdir)
    name = run.run_name or (os.path.basename(os.path.normpath(run.run_dir)) if run.run_dir else
                            f"{label}_s{run.seed}_{time.strftime('%Y%m%d-%H%M%S')}")
    return dataclasses.replace(settings, run=dataclasses.replace(
        run, run_name=name, run_dir=run.run_dir or os.path.join("runs", name),
        threads=run.threads or default_threads(settings.economy.num_agents)))


def _describe(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def _close_all(*closers) -> None:
    """Call every closer; re-raise the first failure afterwards, unless another error is on its way."""
    failure = None
    for close in closers:
        try:
            close()
        except Exception as error:  # noqa: BLE001 - remember, close the others, raise below
            failure = failure or error
    if failure is not None:
        raise failure


@contextlib.contextmanager
def _writer_thread_errors_reported_by_the_loop():
    """TensorBoard writes events from a thread and re-raises its OSError in the loop at the next write;
    keep the thread from also printing a traceback of it (one message, docs/design.md section 7)."""
    previous = threading.excepthook

    def hook(args) -> None:
        if not (issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def train(settings: Settings, learner: Optional[Learner] = None) -> str:
    """Train for settings.run.steps env steps in total; returns the run folder.

    ``learner``: an already built Learner (any algorithm following agents.base.Learner); default:
    make_learner(settings.run.learner, ...), a built-in name or a plug-in's ``module:ClassName``. A new
    run needs a new or empty folder; with ``settings.run.resume`` the run continues bit-exactly from
    its checkpoint.
    """
    with _writer_thread_errors_reported_by_the_loop():
        return _train(complete_run_settings(settings), learner)


def _train(settings: Settings, learner: Optional[Learner]) -> str:
    args, run_dir = settings.run, settings.run.run_dir
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    try:
        if args.resume is None:
            rundir.check_new_run_dir(run_dir)
        else:
            rundir.check_resumable(run_dir)
            rundir.remove_stale_temporaries(run_dir)
    except ValueError as error:
        raise RunError(f"run folder: {error}") from None
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)

    # Build the economy, the learner and the recorder; restore them when resuming.
    economy = Economy(settings.economy)
    learner = learner if learner is not None else make_learner(args.learner, settings.economy, settings.learner)
    recorder = Recorder(settings.economy)
    if args.resume is not None:
        saved = load_checkpoint(checkpoint_path)
        for part in ("economy", "learner"):
            if saved["settings"][part] != settings.to_json()[part]:
                raise ResumeError(f"{checkpoint_path}: its {part} settings differ from config.json's")
        saved_threads = saved["settings"]["run"].get("threads") or default_threads(settings.economy.num_agents)
        if saved_threads != args.threads:
            raise ResumeError(f"--threads {args.threads}: the run in {run_dir} ran with {saved_threads} threads; "
                              "another count changes the order of float sums, so a resumed run keeps it")
        learner.load_state_dict(saved["learner"])
        economy.load_state_dict(saved["economy"])
        recorder.load_state_dict(saved["recorder"])
        set_rng_states(saved["rng"])
        step, episode, observation = saved["step"], saved["episode"], economy.observation
    else:
        step, episode = 0, 0
        observation = economy.reset(seed=episode_seed(args.seed, episode))
    if step >= args.steps:
        raise ResumeError(f"--steps {args.steps}: the run in {run_dir} is already at step {step}; ask for more")

    # The first events after a resume purge what an interrupted run logged after the checkpoint
    # (events at the checkpoint's own step were written before it was taken, so they stay).
    try:
        atomic_write_text(os.path.join(run_dir, "config.json"), json.dumps(settings.to_json(), indent=2))
        if step:
            rundir.wait_to_sort_after_existing_events(run_dir)
        writer = SummaryWriter(log_dir=run_dir, purge_step=step + 1 if step else None)
        if not step:
            writer.add_text("hyperparameters", hyperparameter_table(settings), 0)
    except OSError as error:
        raise RunError(f"cannot write the run folder {run_dir}: {_describe(error)}") from None
    last_checkpoint = step if step else None

    def kept() -> str:
        return f"{checkpoint_path} (step {last_checkpoint})" if last_checkpoint else "no checkpoint yet"

    def checkpoint() -> None:
        nonlocal last_checkpoint
        try:
            save_checkpoint(checkpoint_path, {
                "step": step, "episode": episode, "settings": settings.to_json(), "learner": learner.state_dict(),
                "economy": economy.state_dict(), "rng": rng_states(), "recorder": recorder.state_dict()})
        except OSError as error:
            raise RunError(f"step {step}: cannot write the checkpoint: {_describe(error)}; "
                           f"last good checkpoint kept: {kept()}") from None
        last_checkpoint = step

    painter = BackgroundPainter(plots.dashboard_image)
    recorder.start_clock(step)
    recorder.begin_final_window(args.steps, step)
    progress = tqdm(total=args.steps, initial=step, desc=args.run_name, unit="step", dynamic_ncols=True,
                    mininterval=0.5)
    try:
        with GracefulStop() as stop:
            while step < args.steps and stop.signum is None:
                if economy.done:  # a new episode: refound the population, keep the learner
                    episode += 1
                    observation = economy.reset(seed=episode_seed(args.seed, episode))
                try:
                    actions = executed_actions(learner, learner.act(observation))  # (a reference's warm start)
                except NonFiniteLossError as error:
                    raise NonFiniteLossError(f"step {step + 1}: {error}; last good checkpoint kept: {kept()}") \
                        from error
                try:
                    out = economy.step(actions)
                except ValueError as error:
                    raise RunError(f"step {step + 1}: the economy refused the learner's actions: {error}; "
                                   f"last good checkpoint kept: {kept()}") from error
                step += 1
                try:
                    learned = learner.update(out)
                except NonFiniteLossError as error:
                    raise NonFiniteLossError(f"step {step}: {error}; run stopped before any weight changed, "
                                             f"last good checkpoint kept: {kept()}") from error
                learner.on_births(out.births)
                recorder.add(economy.last_stats, learned, step)

                # Logging: cheap interval means every log_every steps, pictures every dashboard_every. The
                # attention [N, K] is read only then (a learner on a GPU copies it to the CPU when read)
                logs = step % args.log_every == 0
                dashboard = bool(args.dashboard_every) and step % args.dashboard_every == 0
                attention = getattr(learner, "last_attention", None) if logs or dashboard else None
                attention = None if attention is None else attention.detach()
                if logs:
                    scalars = recorder.write(writer, step, actions.broadcast, attention, observation.peer_mask)
                    recorder.write_images(writer, painter)
                    progress.set_postfix(reward=f"{scalars['reward/mean']:.4f}", refresh=False)
                if dashboard:
                    recorder.snapshot(writer, step, economy, observation, actions, out, attention, painter)
                observation = out.observation

                if step % args.checkpoint_every == 0 or step == args.steps:
                    checkpoint()
                progress.update(1)
            if stop.signum is not None:
                if step != (last_checkpoint or 0):
                    checkpoint()
                raise StopRequested(stop.signum, f"step {step} of {args.steps}; " + (
                    f"checkpoint kept: {kept()}; continue with --resume {run_dir}" if last_checkpoint else
                    f"no step was taken, nothing to resume in {run_dir}"))
            recorder.write_images(writer, painter, wait=True)
            _close_all(painter.close, progress.close, writer.close)
            recorder.write_final_metrics(run_dir)
    except OSError as error:
        raise RunError(f"step {step}: cannot write the run's files in {run_dir}: {_describe(error)}; "
                       f"last good checkpoint kept: {kept()}") from None
    finally:
        try:  # after an error: end the worker and close the files without hiding the error
            _close_all(painter.close, progress.close, writer.close)
        except Exception:  # noqa: BLE001
            pass
    return run_dir
