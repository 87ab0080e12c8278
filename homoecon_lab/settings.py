"""train.py's settings: the run's own fields, the economy's and the learner's, and config.json I/O.

`Settings` is what `homoecon_lab.training.train` takes; config.json holds `Settings.to_json()` and
`read_run_config` reads it back strictly (every key present, none unknown, every value valid), so a
hand-edited file is refused with a message naming the key instead of half-applied
(docs/design.md sections 6 and 7).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional

from agents import resolve_learner
from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig, Job
from homoecon_env.scenarios import check_scenario
from homoecon_env.validation import check_int

MAX_SEED = 2**32 - 1  # the run seed seeds NumPy's legacy global generator, which takes [0, 2**32 - 1]
RESUMABLE = ("steps", "checkpoint_every", "log_every", "dashboard_every")  # may change on --resume
# Fields added after config.json files were first written, by group. A file without one gets the field's
# default, which reproduces what that run did: a new option's default is the behaviour before it existed.
# (A config.json missing any other key is refused: it was edited by hand.)
FIELDS_ADDED = {
    "run": ("scenario",),
    "economy": ("broadcast_mode", "vocab_size", "message_length", "taste_scale", "private_signals",
                "boom_multiplier", "boom_switch", "scout_fraction", "world_width", "world_height", "resource_map",
                "region_phase_shift", "migration_cost", "peer_radius", "carrying_capacity"),
    "learner": ("clip_epsilon", "gae_lambda", "ppo_epochs", "value_coef", "inheritance", "inherit_optimizer",
                "horizon_baseline", "attention_sink", "mean_context",
                # language-model agents and mixed populations (docs/design.md section 12)
                "llm_backend", "llm_base_url", "llm_model", "llm_max_tokens", "llm_temperature", "llm_timeout_s",
                "llm_concurrency", "llm_memory", "llm_peers_shown", "mix",
                # learners on a GPU (issue 19): an older run's learner ran on the CPU in float32
                "device", "dtype",
                # learning beside a reference policy (issue 16, agents.reference): an older run had none
                "reference", "reference_steps", "reference_coef", "reference_rows"),
}
# What `train.py --scenario NAME` trains the learners that take a reference with (`reinforce`,
# `uniform_attention`), under the flags given (docs/design.md section 9): on supply_chain they start as
# apprentices of the plan (agents.reference), since from scratch they never find the chain, with inherited
# optimizer state and little mutation, so that a lineage's networks keep what its lives of 10 steps learnt.
# `--reference none` drops a scenario's training settings altogether: the learners train as they did before.
SCENARIO_TRAINING = {"supply_chain": {"reference": "scripted_chain", "reference_steps": 4000, "reference_coef": 0.3,
                                      "reference_rows": 8, "inherit_optimizer": True, "param_mutation": 0.001}}
REFERENCE_LEARNERS = ("reinforce", "uniform_attention")  # the learners that take LearnerConfig.reference


def scenario_training(scenario: str, learner: str, reference_given: Optional[str] = None) -> dict:
    """The LearnerConfig fields `train.py --scenario` defaults to for ``learner`` (SCENARIO_TRAINING; {} for a
    learner that takes no reference, and with ``reference_given`` "none", i.e. --reference none)."""
    if learner not in REFERENCE_LEARNERS or reference_given == "none":
        return {}
    return dict(SCENARIO_TRAINING.get(scenario, {}))
# Fields whose flag is not --<field name> (LearnerConfig.dtype would read as the economy's; it is the learner's)
FLAG_NAMES = {"dtype": "--learner-dtype"}


@dataclass(frozen=True)
class RunArgs:
    """How long to train, where to write, how often to log and checkpoint."""

    steps: int = 10_000
    """total env steps to train (episodes of --max-steps follow each other)"""
    seed: int = 1
    """seeds python, numpy, torch, the learner and every episode of the economy (0 to 2**32 - 1)"""
    learner: str = "reinforce"
    """the algorithm: a name in agents.LEARNERS, or a class implementing agents.base.Learner by its import
    path package.module:ClassName (found from the current directory too; docs/design.md section 5)"""
    scenario: str = "seed"
    """the economy's base settings, a name in homoecon_env.scenarios.SCENARIOS (docs/design.md section 9); the
    economy settings given apply on top. config.json records it; one without it (older runs) means seed"""
    run_name: Optional[str] = None
    """name of the run folder; default <learner>_s<seed>_<date-time>"""
    run_dir: Optional[str] = None
    """output folder, new or empty; default runs/<run_name>"""
    checkpoint_every: int = 1000
    """env steps between checkpoints (one is always written at the end, and on SIGTERM/SIGINT)"""
    log_every: int = 10
    """env steps between scalar logs (most scalars averaged over the interval)"""
    dashboard_every: int = 1000
    """env steps between dashboard images and histograms (about 1.5 s each); 0 = never"""
    resume: Optional[str] = None
    """run folder to continue bit-exactly from its checkpoint.pt and config.json"""
    threads: Optional[int] = None
    """torch CPU threads; default 1 up to 1,000 agents (per-call overhead rules), else every core.
    Fixed for a run: another count changes the float sums, so --resume keeps it"""

    def __post_init__(self):
        check_run_args(self)


def check_run_args(args: RunArgs) -> None:
    """ValueError naming the field, its value and the allowed range."""
    check_int("steps", args.steps, 1)
    check_int("seed", args.seed, 0, MAX_SEED)
    check_int("checkpoint_every", args.checkpoint_every, 1)
    check_int("log_every", args.log_every, 1)
    check_int("dashboard_every", args.dashboard_every, 0)
    if args.threads is not None:
        check_int("threads", args.threads, 1)
    check_scenario(args.scenario)
    resolve_learner(args.learner)  # imports a plug-in's module now, so a bad name fails before any run starts
    for name in ("run_name", "run_dir", "resume"):
        value = getattr(args, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be None or a non-empty string, got {value!r}")


def default_threads(num_agents: int) -> int:
    """1 thread up to 1,000 agents (per-call overhead dominates), else every core."""
    return 1 if num_agents <= 1000 else os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """Everything a training run is made of; config.json holds `to_json()`."""

    run: RunArgs
    economy: EconomyConfig
    learner: LearnerConfig

    def to_json(self) -> dict:
        return {"run": dataclasses.asdict(self.run), "economy": dataclasses.asdict(self.economy),
                "learner": dataclasses.asdict(self.learner)}


def shallow_fields(instance) -> dict:
    """A dataclass's fields as a dict, values as they are (no recursion into nested dataclasses)."""
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


def _build(cls, data, where: str):
    """``cls(**data)`` when ``data`` holds exactly ``cls``'s fields; JSON lists become tuples."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, got {type(data).__name__}")
    names = [field.name for field in dataclasses.fields(cls)]
    missing, unknown = [n for n in names if n not in data], sorted(set(data) - set(names))
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(
            part for part in (missing and f"missing keys {missing}", unknown and f"unknown keys {unknown}") if part))
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def economy_from_json(data) -> EconomyConfig:
    """The EconomyConfig that ``dataclasses.asdict`` turned into ``data`` (jobs as a list of objects)."""
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise ValueError(f"economy.jobs must be a list of job objects, got {type(data).__name__}"
                         if not isinstance(data, dict) else f"economy.jobs must be a list, got {data.get('jobs')!r}")
    jobs = tuple(_build(Job, job, f"economy.jobs[{i}]") for i, job in enumerate(data["jobs"]))
    data = with_added_fields(EconomyConfig, data, FIELDS_ADDED["economy"])
    return _build(EconomyConfig, {**data, "jobs": list(jobs)}, "economy")


def with_added_fields(cls, data, names: tuple[str, ...]):
    """``data`` plus the default of each field of ``cls`` in ``names`` that it lacks (FIELDS_ADDED);
    anything but a dict is returned as it is, for `_build` to refuse."""
    if not isinstance(data, dict):
        return data
    return {**{f.name: f.default for f in dataclasses.fields(cls) if f.name in names}, **data}


def settings_from_json(data) -> Settings:
    """Settings from a parsed config.json; ValueError names the key that is missing, unknown or invalid."""
    if not isinstance(data, dict):
        raise ValueError(f"expected an object with keys run, economy, learner, got {type(data).__name__}")
    groups = ["run", "economy", "learner"]
    missing, unknown = [g for g in groups if g not in data], sorted(set(data) - set(groups))
    if missing or unknown:
        raise ValueError(f"expected keys {groups}, missing {missing}, unknown {unknown}")
    run = with_added_fields(RunArgs, data["run"], FIELDS_ADDED["run"])
    learner = with_added_fields(LearnerConfig, data["learner"], FIELDS_ADDED["learner"])
    if isinstance(learner, dict) and "ppo_entropy_coef" not in learner and "entropy_coef" in learner:
        learner = {**learner, "ppo_entropy_coef": learner["entropy_coef"]}  # written before PPO had its own
    return Settings(_build(RunArgs, run, "run"), economy_from_json(data["economy"]),
                    _build(LearnerConfig, learner, "learner"))


def read_run_config(path: str) -> Settings:
    """config.json at ``path`` as Settings; ValueError naming the file and the problem."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    try:
        return settings_from_json(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def flag(name: str) -> str:
    """The command-line flag of a field: ``num_agents`` -> ``--num-agents`` (but see FLAG_NAMES)."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
