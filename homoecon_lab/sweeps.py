"""What a sweep is: sweep.py's flags, its trials and its folder (docs/design.md section 10).

A sweep is a grid (``--grid FIELD=v1,v2``, any train.py setting) times seeds; each trial is one
`homoecon_lab.training.train` call (`homoecon_lab.sweep_runner` runs them on Ray Tune). Every trial's
Settings is built and validated here, without Ray, so a bad field or value ends at once with one
message naming it.

The folder ``sweeps/<name>/`` holds sweep.json (the sweep's settings: a rerun with others is refused),
runs/<grid point>_s<seed>/ (one train.py run folder per trial; final_metrics.json there means finished),
trials/<trial>.json (status, error, attempts, wall time), and the outputs of `homoecon_lab.sweep_summary`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig
from homoecon_lab.cli import _EconomyFlags, _LearnerFlags, _RunFlags, fail, flag_message, search_current_directory
from homoecon_lab.recorder import FINAL_METRICS
from homoecon_lab.settings import MAX_SEED, RunArgs, Settings, flag, shallow_fields

GROUPS = {"run": RunArgs, "economy": EconomyConfig, "learner": LearnerConfig}
IN_PYTHON = "set in Python, not on the command line"
FIXED_PER_TRIAL = {"seed": "use --seeds or --seed-list", "run_name": "a trial's folder is named after it",
                   "run_dir": "a trial's folder is sweeps/<name>/runs/<trial>", "resume": "a sweep resumes itself",
                   "resources": IN_PYTHON, "jobs": IN_PYTHON,
                   "scenario": "sweep.py runs the seed scenario; its economy flags set the rest"}


class SweepError(ValueError):
    """A sweep cannot start or go on (another sweep in its folder, Ray missing): one message."""


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
    scenario: tyro.conf.Suppress[str] = "seed"  # not yet: trials would need the scenario's economy as their base
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
    """A --grid value (text) as the field's type: int, float, bool, str, a Literal's choice, None for Optional,
    tuples of numbers."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() == "none":
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return tuple(convert(name, part, args[0]) for part in text.split())
    if origin is typing.Literal:  # a choice of strings, e.g. inheritance
        if text not in args:
            raise ValueError(f"{name} expects one of {', '.join(map(str, args))}, got {text!r}")
        return text
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
