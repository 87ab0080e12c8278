"""Running a sweep on Ray Tune: one trial per grid point and seed, resumable (docs/design.md section 10).

Each trial is one `homoecon_lab.training.train` call in a Tune trial with one CPU: a local Ray by
default, a running cluster with ``--address``. Resuming is bookkeeping over the run folders, not
Tune's `Tuner.restore`: a trial whose run folder holds final_metrics.json is finished and never
re-run; one with a checkpoint continues from it (train.py's --resume, bit-exact); any other starts
over. The run folders are always current (checkpoints are written atomically as a run goes), while
Tune's snapshot of its experiment can lag behind the trials it lost and knows nothing of train()'s
checkpoints; it also works when the sweep is restarted from another machine.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Optional

from homoecon_env.files import atomic_write_text
from homoecon_lab import sweep_summary
from homoecon_lab.recorder import FINAL_METRICS
from homoecon_lab.settings import settings_from_json
from homoecon_lab.sweeps import Sweep, SweepError, Trial, check_folder, is_finished, read_record, trial_record_path

INSTALL = "pip install -e '.[ray]'"


# --------------------------------------------------------------------------- one trial (in a Ray worker)


def run_trial(job: dict) -> dict:
    """Run (or continue) one trial: job = {"label", "folder", "search_path", "settings" (Settings.to_json())}.

    Never raises for a failing run: the error goes into trials/<label>.json and the returned record."""
    from agents.checkpoint import load_checkpoint
    from homoecon_lab.recorder import Recorder
    from homoecon_lab.training import train

    if job["search_path"] not in sys.path:  # a plug-in learner next to where sweep.py was started
        sys.path.append(job["search_path"])
    previous = read_record(job["folder"], job["label"])
    start = time.perf_counter()
    try:
        settings = settings_from_json(job["settings"])
        run_dir = settings.run.run_dir
        checkpoint = os.path.join(run_dir, "checkpoint.pt")
        # train()'s progress bar is for a terminal; Tune shows the sweep's progress instead.
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            if os.path.isfile(checkpoint) and os.path.isfile(os.path.join(run_dir, "config.json")):
                saved = load_checkpoint(checkpoint)
                if saved["step"] >= settings.run.steps:  # stopped after its last checkpoint, before the metrics
                    recorder = Recorder(settings.economy)
                    recorder.load_state_dict(saved["recorder"])
                    recorder.write_final_metrics(run_dir)
                else:
                    train(dataclasses.replace(settings, run=dataclasses.replace(settings.run, resume=run_dir)))
            else:
                shutil.rmtree(run_dir, ignore_errors=True)  # started, but nothing to continue from: start over
                train(settings)
        status, error = "ok", ""
    except Exception as failure:  # noqa: BLE001 - any failure of the trial is its result
        status, error = "error", " ".join(f"{type(failure).__name__}: {failure}".split())
    record = {"status": status, "error": error, "attempts": previous.get("attempts", 0) + 1,
              "wall_s": round(previous.get("wall_s", 0.0) + time.perf_counter() - start, 3)}
    atomic_write_text(trial_record_path(job["folder"], job["label"]), json.dumps(record, indent=2) + "\n")
    return record


def _trainable(config: dict) -> None:
    """The Tune function trainable: one trial, one report."""
    from ray import tune

    record = run_trial(config["job"])
    tune.report({"ok": float(record["status"] == "ok"), "wall_s": record["wall_s"]})


# --------------------------------------------------------------------------- the driver


def require_ray():
    """Import Ray Tune, or SweepError with the install command."""
    try:
        import ray
        from ray import tune
    except ImportError as error:
        raise SweepError(f"sweeps run on Ray Tune, which is not installed ({error}); install it with {INSTALL}") \
            from None
    return ray, tune


def result_row(sweep: Sweep, trial: Trial, tune_error: str = "") -> dict:
    """results.csv's row of a trial: grid values, seed, status, wall time, error, final metrics."""
    record = read_record(sweep.folder, trial.label)
    row = {"trial": trial.label, "point": trial.point, **trial.values, "seed": trial.seed,
           "wall_s": record.get("wall_s", "")}
    if is_finished(trial):
        with open(os.path.join(trial.settings.run.run_dir, FINAL_METRICS), encoding="utf-8") as stream:
            row.update(json.load(stream)["metrics"], status="ok", error="")
    elif record.get("status") == "error" or tune_error:
        row.update(status="error", error=record.get("error") or " ".join(tune_error.split()))
    else:
        row.update(status="unfinished", error="")
    return row


def write_outputs(sweep: Sweep, tune_errors: Optional[dict] = None, figure: bool = True) -> list[dict]:
    """results.csv, and with ``figure`` summary.md and comparison.png, from the run folders; returns the rows."""
    rows = [result_row(sweep, trial, (tune_errors or {}).get(trial.label, "")) for trial in sweep.trials]
    sweep_summary.write_results(os.path.join(sweep.folder, "results.csv"), list(sweep.grid), rows)
    if figure:
        sweep_summary.write_summary(os.path.join(sweep.folder, "summary.md"), sweep.name, sweep.grid, sweep.points,
                                    rows)
        sweep_summary.write_figure(os.path.join(sweep.folder, "comparison.png"), sweep.name, sweep.points, rows)
    return rows


def run_sweep(sweep: Sweep) -> list[dict]:
    """Run the sweep's unfinished trials on Ray Tune and write its outputs; returns results.csv's rows.

    Finished trials are kept; the others continue from their checkpoint or start over. Uses the Ray
    already initialised in this process if any, else starts a local one (or joins ``sweep.address``)."""
    check_folder(sweep)
    ray, tune = require_ray()
    os.makedirs(os.path.join(sweep.folder, "trials"), exist_ok=True)
    atomic_write_text(os.path.join(sweep.folder, "sweep.json"), json.dumps(sweep.spec, indent=2) + "\n")
    pending = [trial for trial in sweep.trials if not is_finished(trial)]
    tune_errors = {}
    if pending:
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no Tune event files beside the runs'
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: our progress bar only
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=sweep.address, num_cpus=sweep.num_cpus, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
            except ConnectionError as error:
                raise SweepError(f"--address {sweep.address}: cannot connect to a Ray cluster there ({error}); "
                                 "start one with `ray start --head` (its token too if it uses token "
                                 "authentication), or leave out --address for a local Ray") from None
        try:
            tune_errors = _fit(sweep, pending, tune)
        finally:
            if started:
                ray.shutdown()
    return write_outputs(sweep, tune_errors)


def _fit(sweep: Sweep, pending: list, tune) -> dict:
    """One Tune experiment over the pending trials; returns trial label -> Tune's error (a lost worker)."""
    jobs = [{"label": trial.label, "folder": sweep.folder, "search_path": os.getcwd(),
             "settings": json.loads(json.dumps(trial.settings.to_json()))} for trial in pending]  # as config.json
    from ray.tune.logger import JsonLoggerCallback

    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 1}),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(trial_name_creator=lambda t: t.config["job"]["label"],
                                    trial_dirname_creator=lambda t: t.config["job"]["label"]),
        run_config=tune.RunConfig(name="tune", storage_path=os.path.join(sweep.folder, ".tune"), verbose=0,
                                  callbacks=[_progress(tune, sweep, len(pending)), JsonLoggerCallback()]))
    main = threading.current_thread() is threading.main_thread()
    if main:  # a scheduler's SIGTERM stops the sweep as Ctrl-C does (Tune ends the trials; rerun to resume)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    quiet = logging.getLogger("ray.tune")  # its advice on a stop (Tuner.restore) is not how a sweep resumes
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        grid = tuner.fit()
    finally:
        quiet.setLevel(level)
        if main:
            signal.signal(signal.SIGTERM, previous)
    errors = {}
    for result in grid:
        if result.error is not None and result.config:
            errors[result.config["job"]["label"]] = f"{type(result.error).__name__}: {result.error}"
    return errors


def _progress(tune, sweep: Sweep, pending: int):
    """A Tune callback: a progress bar over finished trials, one line per trial, results.csv kept current."""
    from tqdm import tqdm

    class Progress(tune.Callback):
        def setup(self, **info) -> None:
            self.bar = tqdm(total=len(sweep.trials), initial=len(sweep.trials) - pending, desc=f"sweep {sweep.name}",
                            unit="trial", dynamic_ncols=True)
            self.failed = 0

        def _done(self, trial, error: str = "") -> None:
            label = trial.config["job"]["label"]
            record = read_record(sweep.folder, label)
            ok = record.get("status") == "ok" and not error
            self.failed += not ok
            text = "ok" if ok else f"error: {record.get('error') or error}"
            self.bar.write(f"{label}: {text} ({record.get('wall_s', '?')} s)")
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
            write_outputs(sweep, {label: error} if error else None, figure=False)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._done(trial)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._done(trial, "the trial's Ray worker failed")

        def on_experiment_end(self, trials, **info) -> None:
            self.bar.close()

    return Progress()
