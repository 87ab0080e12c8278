"""Command lines from the settings dataclasses with tyro (the CleanRL way; docs/design.md section 6).

Each field is one flat flag (``--num-agents``, not ``--economy.num-agents``) whose help is the
field's docstring or comment. tyro parses the types; the configs' own validation runs afterwards, so
a bad value ends with one parser-style line naming the flag and exit code 2::

    train.py: error: argument --num-agents: num_agents must be an int >= 1, got -3

`--scenario NAME` (homoecon_env.scenarios) picks the economy's base: the flags are parsed once to find
it, then again with its economy as the economy flags' defaults, so only the flags given override it; the
learner flags default likewise to the scenario's training settings (`homoecon_lab.settings.SCENARIO_TRAINING`:
supply_chain's learners start as apprentices of its plan; `--reference none` trains them from scratch).

`--resume DIR` reads the run's config.json (strictly) and parses the flags again with its values as
defaults: a flag that changes anything but --steps, --checkpoint-every, --log-every or
--dashboard-every is refused.

`--learner` takes a built-in name or a plug-in class by import path, ``package.module:ClassName``
(agents.resolve_learner). Both parsers first append the current directory to ``sys.path``
(`search_current_directory`), so a researcher's ``mymodule.py`` next to where they run the command is
found, whichever folder train.py itself lives in.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal, NoReturn, Optional

import tyro

from agents import LEARNERS
from agents.config import LearnerConfig, learner_device
from agents.reference import check_reference
from agents.reinforce import ReinforceLearner
from homoecon_env.config import EconomyConfig, Job
from homoecon_env.scenarios import SCENARIOS, scenario_config
from homoecon_lab import rundir
from homoecon_lab.settings import (
    FLAG_NAMES,
    REFERENCE_LEARNERS,
    RESUMABLE,
    RunArgs,
    Settings,
    flag,
    read_run_config,
    scenario_training,
    shallow_fields,
)
from homoecon_lab.training import complete_run_settings

_JOBS_DEFAULT = next(f for f in dataclasses.fields(EconomyConfig) if f.name == "jobs").default_factory


# Flag views of the settings: same fields, not validated while tyro builds them (we validate after,
# naming the flag), and without the structured fields (resources, jobs) or the seeds --seed sets.
@dataclass(frozen=True)
class _RunFlags(RunArgs):
    """How long to train, where to write, how often to log and checkpoint."""

    learner: Annotated[str, tyro.conf.arg(
        help=f"the algorithm, one of {{{','.join(sorted(LEARNERS))}}}, or any class implementing "
             "agents.base.Learner by its import path package.module:ClassName (a module in the current "
             "directory is found too)")] = RunArgs.learner
    scenario: Annotated[str, tyro.conf.arg(
        help=f"the economy's base settings, one of {{{','.join(sorted(SCENARIOS))}}} "
             "(homoecon_env.scenarios.SCENARIOS); the economy flags given override it, the others take its "
             "values. config.json records it (docs/design.md section 9)")] = RunArgs.scenario

    def __post_init__(self):
        pass


@dataclass(frozen=True)
class _EconomyFlags(EconomyConfig):
    """Economy settings (EconomyConfig fields; resources and jobs are set in Python, see the README). Their
    defaults are the --scenario's (`python train.py --scenario NAME --help` shows them)."""

    resources: tyro.conf.Suppress[tuple[str, ...]] = EconomyConfig.resources
    jobs: tyro.conf.Suppress[tuple[Job, ...]] = field(default_factory=_JOBS_DEFAULT)
    min_consumption: float = EconomyConfig.min_consumption
    """an agent starves when need . consumed falls below this"""
    seed: tyro.conf.Suppress[Optional[int]] = 0

    def __post_init__(self):
        pass


@dataclass(frozen=True)
class _LearnerFlags(LearnerConfig):
    """Learner settings (LearnerConfig fields; --seed seeds the learner too)."""

    seed: tyro.conf.Suppress[int] = 0
    dtype: Annotated[Literal["float32", "float64"], tyro.conf.arg(
        name=FLAG_NAMES["dtype"][2:], help=LearnerConfig.help()["dtype"])] = LearnerConfig.dtype

    def __post_init__(self):
        pass


@dataclass(frozen=True)
class TrainFlags:
    run: _RunFlags
    economy: _EconomyFlags
    learner: _LearnerFlags


def search_current_directory() -> None:
    """Append the current directory to ``sys.path`` (once), for ``--learner mymodule:MyLearner``.

    ``python train.py`` puts the script's own folder on sys.path, not the current directory (``python
    -m`` would). It goes last, so it never shadows the project's or an installed package of the same
    name. Evaluate's worker processes (spawn) start with the parent's sys.path and working directory,
    so they import the same module.
    """
    here = os.getcwd()
    if here not in (os.path.abspath(entry or os.curdir) for entry in sys.path):
        sys.path.append(here)


def fail(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` (argparse's form) and exit with status 2."""
    print(f"usage: {prog} [-h] [OPTIONS]\n{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def flag_message(error: Exception, names) -> str:
    """``argument --x: <error>`` for the field among ``names`` the message names first."""
    text = str(error)
    hits = sorted((match.start(), name) for name in names if (match := re.search(rf"\b{name}\b", text)))
    return f"argument {flag(hits[0][1])}: {text}" if hits else text


def _build(prog: str, make, names, what: str):
    try:
        return make()
    except (TypeError, ValueError) as error:
        message = flag_message(error, names)
        fail(prog, message if message.startswith("argument") else f"{what} settings: {message}")


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _parse(argv, description: str, default: Optional[TrainFlags] = None) -> TrainFlags:
    return tyro.cli(TrainFlags, args=argv, prog="train.py", description=description, default=default,
                    config=(tyro.conf.OmitArgPrefixes,))


def _with_scenario_defaults(argv, description: str) -> TrainFlags:
    """The flags parsed twice: once to learn --scenario (and --resume), then with the scenario's economy
    as the economy flags' defaults, so only the flags given override it (--help shows its values)."""
    first = _parse([arg for arg in argv if arg not in ("-h", "--help")], description)
    if first.run.resume is not None:
        return first
    base = _build("train.py", lambda: scenario_config(first.run.scenario), ["scenario"], "run")
    given = "--reference" in argv or any(arg.startswith("--reference=") for arg in argv)
    training = scenario_training(first.run.scenario, first.run.learner, first.learner.reference if given else None)
    return _parse(argv, description, default=TrainFlags(_RunFlags(), _EconomyFlags(**shallow_fields(base)),
                                                        _LearnerFlags(**training)))


def parse_train_args(argv=None, description: str = "Train learners in the HomoEcon economy.") -> Settings:
    """train.py's flags -> validated Settings (with --resume: the run's, less the resumable ones given).

    The economy is --scenario's (`homoecon_env.scenarios.scenario_config`) with the economy flags given
    applied on top; a flag not given keeps the scenario's value, not EconomyConfig's default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    search_current_directory()
    flags = _with_scenario_defaults(argv, description)
    if flags.run.resume is not None:
        return _resumed(argv, flags.run.resume, description)
    run = _build("train.py", lambda: RunArgs(**shallow_fields(flags.run)), _names(RunArgs), "run")
    economy = _build("train.py", lambda: EconomyConfig(**{**shallow_fields(flags.economy), "seed": run.seed}),
                     _names(EconomyConfig), "economy")
    learner = _build("train.py", lambda: LearnerConfig(**{**shallow_fields(flags.learner), "seed": run.seed}),
                     _names(LearnerConfig), "learner")
    _build("train.py", lambda: learner_device(learner.device), ["device"], "learner")  # CUDA there? (up front)
    if run.learner in REFERENCE_LEARNERS:  # a reference the economy cannot serve (agents.reference), up front
        _build("train.py", lambda: check_reference(learner, economy, ReinforceLearner.update_rows),
               ["reference_rows", "reference"], "learner")
    if run.learner == "mixed":  # the fractions must give every group a slot of this economy
        from agents.mixed import check_mix
        _build("train.py", lambda: check_mix(learner.mix, economy.num_agents), ["mix"], "learner")
    settings = complete_run_settings(Settings(run, economy, learner))
    try:
        rundir.check_new_run_dir(settings.run.run_dir)
    except ValueError as error:
        fail("train.py", f"argument --run-dir: {error}")
    return settings


def _resumed(argv, folder: str, description: str) -> Settings:
    try:
        rundir.check_resumable(folder)
        saved = read_run_config(os.path.join(folder, "config.json"))
    except ValueError as error:
        fail("train.py", f"argument --resume: {error}")
    saved = dataclasses.replace(saved, run=dataclasses.replace(saved.run, run_dir=folder, resume=folder))
    defaults = TrainFlags(_RunFlags(**shallow_fields(saved.run)), _EconomyFlags(**shallow_fields(saved.economy)),
                          _LearnerFlags(**shallow_fields(saved.learner)))
    given = _parse(argv, description, default=defaults)
    for part in ("run", "economy", "learner"):
        old, new = shallow_fields(getattr(saved, part)), shallow_fields(getattr(given, part))
        for name in old:
            if name not in RESUMABLE and new[name] != old[name]:
                why = " (another thread count changes the order of float sums: not bit-exact)" \
                    if name == "threads" else ""
                fail("train.py", f"argument {flag(name)}: a resumed run keeps its setting ({old[name]!r}){why}; "
                                 f"got {new[name]!r}. Only {', '.join(map(flag, RESUMABLE))} may change")
    run = _build("train.py", lambda: dataclasses.replace(saved.run, **{k: getattr(given.run, k) for k in RESUMABLE}),
                 _names(RunArgs), "run")
    _build("train.py", lambda: learner_device(saved.learner.device), ["device"], "learner")
    return dataclasses.replace(saved, run=run)


def parse_eval_args(argv=None, description: str = "Evaluate HomoEcon learners.", epilog: str = ""):
    """evaluate.py's flags -> checked `homoecon_lab.evaluation.Args` (the run it names is read and checked)."""
    from homoecon_lab.evaluation import Args, check_args, load_source

    search_current_directory()
    args = tyro.cli(Args, args=sys.argv[1:] if argv is None else list(argv), prog="evaluate.py",
                    description=f"{description}\n\n{epilog}".strip())
    try:
        check_args(args)
        load_source(args)
    except ValueError as error:
        text = str(error)
        match = re.match(r"(--[a-z0-9-]+):? (.*)", text, re.S)
        fail("evaluate.py", f"argument {match[1]}: {match[2]}" if match else text)
    return args
