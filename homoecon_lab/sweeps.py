"""Sweeps and multi-seed experiments on Ray Tune: sweep.py's flags, trials and bookkeeping (docs/design.md
section 10).

A sweep is a grid (``--grid FIELD=v1,v2``, any train.py setting) times seeds. Every trial is one
`homoecon_lab.training.train` call with one CPU and one thread, run by Ray Tune: a local Ray by default,
a running cluster with ``--address``. Each trial's settings are built and validated here before Ray
starts, so a bad field or value ends at once with one message naming it.

Output in ``sweeps/<name>/``: sweep.json (the sweep's settings), runs/<grid point>_s<seed>/ (one train.py
run folder per trial), trials/<trial>.json (status, error, wall time), results.csv, summary.md and
comparison.png (`homoecon_lab.sweep_summary`).

Resuming is our own bookkeeping over the run folders, not Tune's experiment state: a trial whose run
folder holds final_metrics.json is finished and never re-run; one with a checkpoint continues from it
(train.py's --resume, bit-exact); any other starts over. The run folders are always up to date (a
checkpoint is written atomically as the run goes), while Tune's snapshot of its experiment can lag
behind the trials it lost and knows nothing of train()'s checkpoints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig
from homoecon_env.files import atomic_write_text
from homoecon_lab import sweep_summary
from homoecon_lab.cli import _EconomyFlags, _LearnerFlags, _RunFlags, fail, flag_message, search_current_directory
from homoecon_lab.recorder import FINAL_METRICS
from homoecon_lab.settings import MAX_SEED, RunArgs, Settings, flag, settings_from_json, shallow_fields

GROUPS = {"run": RunArgs, "economy": EconomyConfig, "learner": LearnerConfig}
IN_PYTHON = "set in Python, not on the command line"
FIXED_PER_TRIAL = {"seed": "use --seeds or --seed-list", "run_name": "a trial's folder is named after it",
                   "run_dir": "a trial's folder is sweeps/<name>/runs/<trial>", "resume": "a sweep resumes itself",
                   "resources": IN_PYTHON, "jobs": IN_PYTHON}
INSTALL = "pip install -e '.[ray]'"


class SweepError(ValueError):
    """A sweep cannot start or go on (a different sweep in its folder, Ray missing); one message."""


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep and where."""

    grid: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """FIELD=v1,v2,...: any train.py setting (e.g. num_agents=50,200 or learner=reinforce,mymodule:MyLearner);
    repeat for more axes (the grid is their product); a tuple field takes space-separated numbers (need=1 1,2 1)"""
    seeds: int = 3
    """trials per grid point, with seeds 0 .. seeds-1"""
    seed_list: tuple[int, ...] = ()
    """the seeds to run instead of 0 .. seeds-1"""
    name: Optional[str] = None
    """the sweep's folder name; default sweep_<hash of its settings>, so the same command resumes it"""
    sweep_dir: str = "sweeps"
    """parent folder of the sweep's folder"""
    address: Optional[str] = None
    """a running Ray cluster (e.g. auto after `ray start --head`); default: start a local Ray"""
    num_cpus: Optional[int] = None
    """CPUs a local Ray may use (one trial each); default every core"""


@dataclass(frozen=True)
class _SweepRunFlags(_RunFlags):
    """Every trial's run settings (--grid overrides them per grid point)."""

    seed: tyro.conf.Suppress[int] = 0
    run_name: tyro.conf.Suppress[Optional[str]] = None
    run_dir: tyro.conf.Suppress[Optional[str]] = None
    resume: tyro.conf.Suppress[Optional[str]] = None
    threads: Optional[int] = 1
    """torch CPU threads of each trial (each trial gets one CPU)"""


@dataclass(frozen=True)
class SweepFlags:
    sweep: SweepOptions
    run: _SweepRunFlags
    economy: _EconomyFlags
    learner: _LearnerFlags


@dataclass(frozen=True)
class Trial:
    label: str  # its run folder's name: <grid point>_s<seed>
    point: str  # the grid point's label: field=value,... ("base" without --grid)
    values: dict  # grid field -> value as given
    seed: int
    settings: Settings  # complete and validated; run_dir = <sweep>/runs/<label>


@dataclass(frozen=True)
class Sweep:
    name: str
    folder: str  # absolute
    grid: dict  # field -> values as given, in --grid order
    spec: dict  # sweep.json: what makes two sweeps the same
    trials: tuple[Trial, ...]
    address: Optional[str] = None
    num_cpus: Optional[int] = None

    @property
    def points(self) -> dict:
        """Grid point label -> its grid values, in grid order."""
        return {trial.point: trial.values for trial in self.trials}


# --------------------------------------------------------------------------- flags -> trials


def parse_sweep_args(argv=None, description: str = "Sweep train.py settings over seeds on Ray Tune.") -> Sweep:
    """sweep.py's flags -> a Sweep whose every trial's Settings is validated; parser-style exit 2 otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    search_current_directory()
    flags = tyro.cli(SweepFlags, args=argv, prog="sweep.py", description=description,
                     config=(tyro.conf.OmitArgPrefixes,))
    options = flags.sweep
    try:
        return build_sweep(options, {part: shallow_fields(getattr(flags, part)) for part in GROUPS})
    except ValueError as error:
        fail("sweep.py", str(error))


def _field_group(name: str) -> tuple[str, type]:
    for part, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        if name in hints:
            return part, hints[name]
    raise ValueError(f"unknown field {name!r}; expected a RunArgs, EconomyConfig or LearnerConfig field (the names "
                     "of train.py's flags, e.g. num_agents for --num-agents)")


def convert(name: str, text: str, hint):
    """A --grid value (text) as the field's type: int, float, bool, str, None for Optional, tuples of numbers."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() == "none":
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return tuple(convert(name, part, args[0]) for part in text.split())
    if hint is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ValueError(f"{name} expects true or false, got {text!r}")
        return words[text.lower()]
    try:
        return hint(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} expects {getattr(hint, '__name__', hint)}, got {text!r}") from None


def parse_grid(entries) -> dict:
    """["num_agents=50,200", ...] -> {"num_agents": ["50", "200"], ...}; ValueError naming the entry."""
    grid = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        name = name.strip().replace("-", "_")
        where = f"argument --grid {entry}"
        if not sep or not name or not values.strip():
            raise ValueError(f"{where}: expected FIELD=v1,v2,... (e.g. num_agents=50,200)")
        if name in FIXED_PER_TRIAL:
            raise ValueError(f"{where}: {name} cannot be swept ({FIXED_PER_TRIAL[name]})")
        if name in grid:
            raise ValueError(f"{where}: {name} is given twice; list all its values in one --grid")
        try:
            _field_group(name)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        texts = [value.strip() for value in values.split(",")]
        if "" in texts or len(set(texts)) != len(texts):
            raise ValueError(f"{where}: expected distinct non-empty values, got {texts}")
        grid[name] = texts
    return grid


def _slug(text: str) -> str:
    """A value's readable, path-safe form: a plug-in learner by its class name."""
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", text.rpartition(":")[2] if ":" in text else text)


def build_sweep(options: SweepOptions, base: dict) -> Sweep:
    """The trials of a grid x seeds over ``base`` ({"run": {...}, "economy": {...}, "learner": {...}} flags)."""
    grid = parse_grid(options.grid)
    seeds = tuple(options.seed_list) if options.seed_list else tuple(range(max(options.seeds, 0)))
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= seed <= MAX_SEED for seed in seeds):
        raise ValueError(f"argument {'--seed-list' if options.seed_list else '--seeds'}: expected distinct seeds "
                         f"in [0, {MAX_SEED}] (at least one), got {list(options.seed_list) or options.seeds}")
    if options.address is not None and options.num_cpus is not None:
        raise ValueError("argument --num-cpus: only for a local Ray; a cluster given by --address has its own")
    if options.num_cpus is not None and options.num_cpus < 1:
        raise ValueError(f"argument --num-cpus: expected an int >= 1, got {options.num_cpus}")
    spec = {"grid": grid, "seeds": list(seeds),
            "settings": {part: {key: value for key, value in fields.items() if key not in FIXED_PER_TRIAL}
                         for part, fields in base.items()}}
    spec = json.loads(json.dumps(spec))  # tuples as lists, as sweep.json stores them
    name = options.name or "sweep_" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    if not re.fullmatch(r"[A-Za-z0-9._=+,-]+", name) or name in (".", ".."):
        raise ValueError(f"argument --name: {name!r} must be a folder name (letters, digits, . _ - = + ,)")
    folder = os.path.abspath(os.path.join(options.sweep_dir, name))

    points = [{}]
    for field_name, texts in grid.items():
        points = [{**point, field_name: text} for point in points for text in texts]
    trials, labels = [], {}
    for values in points:
        point = ",".join(f"{key}={_slug(text)}" for key, text in values.items()) or "base"
        if labels.setdefault(point, values) is not values:
            raise ValueError(f"argument --grid: grid points {labels[point]} and {values} would share the folder "
                             f"name {point!r}; give the plug-in classes distinct names")
        for seed in seeds:
            label = f"{point}_s{seed}"
            run_dir = os.path.join(folder, "runs", label)
            settings = _trial_settings(base, values, seed, label, run_dir)
            trials.append(Trial(label, point, values, seed, settings))
    return Sweep(name, folder, grid, spec, tuple(trials), options.address, options.num_cpus)


def _trial_settings(base: dict, values: dict, seed: int, label: str, run_dir: str) -> Settings:
    parts = {part: dict(fields) for part, fields in base.items()}
    for name, text in values.items():
        part, hint = _field_group(name)
        try:
            parts[part][name] = convert(name, text, hint)
        except ValueError as error:
            raise ValueError(f"argument --grid {name}={','.join([text])}: {error}") from None
    parts["run"].update(seed=seed, run_name=label, run_dir=run_dir, resume=None)
    parts["economy"]["seed"] = parts["learner"]["seed"] = seed  # as train.py: --seed seeds everything
    built = {}
    for part, cls in GROUPS.items():
        try:
            built[part] = cls(**parts[part])
        except (TypeError, ValueError) as error:
            swept = [name for name in values if name in parts[part]]
            hits = [name for name in swept if re.search(rf"\b{name}\b", str(error))]
            if hits:
                raise ValueError(f"argument --grid {hits[0]}={values[hits[0]]}: {error}") from None
            raise ValueError(flag_message(error, list(parts[part]))) from None
    return Settings(**built)


# --------------------------------------------------------------------------- the sweep folder


def check_folder(sweep: Sweep) -> None:
    """SweepError when the sweep's folder holds another sweep (its sweep.json differs), naming what differs."""
    path = os.path.join(sweep.folder, "sweep.json")
    if not os.path.exists(path):
        if os.path.isdir(sweep.folder) and os.listdir(sweep.folder):
            raise SweepError(f"{sweep.folder} holds files but no sweep.json; choose another --name or --sweep-dir")
        return
    try:
        with open(path, encoding="utf-8") as stream:
            stored = json.load(stream)
    except (OSError, ValueError) as error:
        raise SweepError(f"{path}: cannot read it ({error}); choose another --name or --sweep-dir") from None
    if stored == sweep.spec:
        return
    changes = [f"{key} was {stored.get(key)!r}, now {sweep.spec[key]!r}" for key in ("grid", "seeds")
               if stored.get(key) != sweep.spec[key]]
    old, new = stored.get("settings", {}), sweep.spec["settings"]
    changes += [f"{flag(key)} was {old.get(part, {}).get(key)!r}, now {value!r}" for part in new
                for key, value in new[part].items() if old.get(part, {}).get(key) != value]
    what = "; ".join(changes) or "sweep.json differs"
    raise SweepError(f"{sweep.folder} holds a sweep with other settings ({what}); "
                     "run it with its own settings to resume it, or choose another --name")


def trial_record_path(folder: str, label: str) -> str:
    return os.path.join(folder, "trials", f"{label}.json")


def read_record(folder: str, label: str) -> dict:
    """trials/<label>.json (status, error, wall_s, attempts) or an empty record."""
    try:
        with open(trial_record_path(folder, label), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return {}


def is_finished(trial: Trial) -> bool:
    return os.path.isfile(os.path.join(trial.settings.run.run_dir, FINAL_METRICS))


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
        sweep_summary.write_figure(os.path.join(sweep.folder, "comparison.png"), sweep.name, list(sweep.points), rows)
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
            ray.init(address=sweep.address, num_cpus=sweep.num_cpus, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
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
