"""Train independent per-agent learners in the HomoEcon economy (DESIGN.md section 6).

    python train.py                                   # the default 50-agent economy, REINFORCE
    python train.py --learner random --seed 2         # a baseline
    python train.py --num-agents 200 --max-age 20 --steps 20000
    python train.py --resume runs/<run_name> --steps 20000   # continue bit-exactly up to 20000 steps
    tensorboard --logdir runs

Every flag comes from a dataclass field (RunArgs below, EconomyConfig, LearnerConfig) whose comment
or metadata["help"] is the flag's help, so `--help` documents all of them. The loop drives the batched
`Economy` directly (one tensor row per agent slot). When an episode reaches `--max-steps` the
economy is refounded with a seed derived from `--seed` and the episode index, and the learner
carries on: the new founders take over the slots' networks.

Output, in runs/<run_name>/ (or --run-dir): config.json (economy, learner and run settings),
TensorBoard event files (x axis = env steps) and checkpoint.pt (atomic, checksummed; everything
needed to continue bit-exactly, every RNG included). A NaN or inf loss stops the run with a
message naming the step and the agent; the last good checkpoint is left as it was.

TensorBoard, every --log-every steps (means over the interval unless said): reward/mean;
economy/{gini, trade_volume, price/<good>, total/<good>, produced/<good>}; population/{births,
deaths_age, deaths_starvation, mean_age}; jobs/{share/<job>, mean_effort}; trade/{iterations
(projected-gradient steps), init_iterations (Newton steps of the dual start), ir_violation (max)};
learner/<metric> (over the updates in the interval); at the logged step:
comm/participation_ratio (broadcast covariance spectrum), social/attention_entropy (nats, over live
peers); perf/steps_per_sec. Every --dashboard-every steps: histograms (population/ages,
economy/wealth, population/utility_weights/<good>, social/attention_weights) and the `dashboard`
image. The hyper-parameters are a Markdown table under "hyperparameters" (Text tab).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import random
import re
import sys
import time
import typing
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents import LEARNERS, LearnerConfig, make_learner
from agents.base import Learner, NonFiniteLossError
from agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from homoecon_env.config import EconomyConfig, Job
from homoecon_env.core import Economy
from homoecon_env.diagnostics import metrics, plots
from homoecon_env.diagnostics.painter import BackgroundPainter
from homoecon_env.files import atomic_write_text


@dataclass(frozen=True)
class RunArgs:
    """How long to train, where to write, how often to log and checkpoint."""

    steps: int = 10_000  # total env steps to train (episodes of --max-steps follow each other)
    seed: int = 1  # seeds python, numpy, torch, the learner and every episode of the economy
    learner: str = "reinforce"  # the algorithm, from agents.LEARNERS
    run_name: Optional[str] = None  # name of the run folder; default <learner>_s<seed>_<date-time>
    run_dir: Optional[str] = None  # output folder; default runs/<run_name>
    checkpoint_every: int = 1000  # env steps between checkpoints (one is always written at the end)
    log_every: int = 10  # env steps between scalar logs (most scalars averaged over the interval)
    dashboard_every: int = 1000  # env steps between dashboard images and histograms (about 1.5 s each); 0 = never
    resume: Optional[str] = None  # run folder to continue bit-exactly from its checkpoint.pt and config.json
    threads: Optional[int] = None  # torch CPU threads; default 1 up to 1,000 agents (per-call overhead rules), else every core


RESUMABLE = ("steps", "checkpoint_every", "log_every", "dashboard_every", "threads")  # may change on --resume
ECONOMY_NOT_FLAGS = ("resources", "jobs", "seed")  # structured; --seed seeds every episode instead
ECONOMY_HELP = {"need": "per-resource weights of the starvation test need . consumed < min_consumption",
                "min_consumption": "an agent starves when need . consumed falls below this"}
METAVARS = {"run_name": "NAME", "run_dir": "DIR", "resume": "DIR"}
MAX_HISTORY = 2000  # dashboard time-series points kept (thinned by half when full)


class ResumeError(ValueError):
    """--resume cannot continue this run (already finished, or checkpoint and config.json disagree)."""


@dataclass(frozen=True)
class Settings:
    run: RunArgs
    economy: EconomyConfig
    learner: LearnerConfig

    def to_json(self) -> dict:
        return {"run": dataclasses.asdict(self.run), "economy": dataclasses.asdict(self.economy),
                "learner": dataclasses.asdict(self.learner)}


# -- flags from dataclasses -----------------------------------------------------------------------
def field_comments(cls) -> dict[str, str]:
    """The comment after each field in a dataclass's source: the help text of its flag
    (fields may instead carry ``metadata["help"]``, as LearnerConfig's do)."""
    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
    return {m[1]: m[2].strip() for m in map(pattern.match, inspect.getsource(cls).splitlines()) if m}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def _argparse_options(kind) -> Optional[dict]:
    """argparse keywords for a field annotation; None for a structured type with no flag."""
    args = typing.get_args(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind in (int, float, str):
        return {"type": kind, "metavar": kind.__name__.upper()}
    if typing.get_origin(kind) is typing.Union and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if inner in (int, float, str):
            return {"type": _optional(inner), "metavar": f"{inner.__name__.upper()}|none"}
    if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
    return None


def add_flags(parser, cls, title: str, skip=(), extra_help=None, choices=None) -> list[str]:
    """One flag per scalar (or tuple-of-scalar) field of ``cls``; returns the field names added."""
    group = parser.add_argument_group(title, (cls.__doc__ or "").strip().splitlines()[0])
    hints, comments, added = typing.get_type_hints(cls), field_comments(cls), []
    for field in dataclasses.fields(cls):
        options = None if field.name in skip else _argparse_options(hints[field.name])
        if options is None:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        text = field.metadata.get("help") or comments.get(field.name) or \
            (extra_help or {}).get(field.name, field.name.replace("_", " "))
        if field.name in (choices or {}):
            options = {**options, "choices": choices[field.name], "metavar": None}
        elif field.name in METAVARS:
            options = {**options, "metavar": METAVARS[field.name]}
        group.add_argument(flag(field.name), dest=field.name, help=f"{text} (default: {default})", **options)
        added.append(field.name)
    return added


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Economy flags set EconomyConfig fields and learner flags LearnerConfig fields; "
               "invalid values are refused before anything runs.")
    groups = {"run": add_flags(parser, RunArgs, "run", choices={"learner": sorted(LEARNERS)})}
    groups["economy"] = add_flags(parser, EconomyConfig, "economy", skip=ECONOMY_NOT_FLAGS, extra_help=ECONOMY_HELP)
    groups["learner"] = add_flags(parser, LearnerConfig, "learner", skip=groups["run"] + groups["economy"])
    return parser, groups


def _tuples(mapping: dict) -> dict:
    """JSON lists back to the tuples the frozen configs hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in mapping.items()}


def economy_from_json(data: dict) -> EconomyConfig:
    jobs = tuple(Job(**_tuples(job)) for job in data["jobs"])
    return EconomyConfig(**_tuples({k: v for k, v in data.items() if k != "jobs"}), jobs=jobs)


def _build(parser, groups, name: str, make):
    """Build a config, turning its ValueError into a parser error that names the flag."""
    try:
        return make()
    except (TypeError, ValueError) as error:
        named = [f for f in groups[name] if re.search(rf"\b{f}\b", str(error))]
        parser.error(f"argument {flag(named[0])}: {error}" if named else f"{name} settings: {error}")


def _check_run(parser, args: RunArgs) -> None:
    for name, low in (("steps", 1), ("seed", 0), ("checkpoint_every", 1), ("log_every", 1),
                      ("dashboard_every", 0), ("threads", 1)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            parser.error(f"argument {flag(name)}: must be an int >= {low}, got {getattr(args, name)}")


def parse_args(argv=None) -> Settings:
    """Flags -> validated Settings. With --resume: the saved settings, less the RESUMABLE ones given."""
    parser, groups = build_parser()
    given = vars(parser.parse_args(argv))
    run, economy, learner = ({k: given[k] for k in groups[name] if k in given}
                             for name in ("run", "economy", "learner"))
    if "resume" in given:
        saved = read_saved_config(parser, given["resume"])
        for name, chosen in (("run", run), ("economy", economy), ("learner", learner)):
            for key, value in chosen.items():
                old = saved[name].get(key)
                if key not in RESUMABLE and key != "resume" and _jsonable(value) != old:
                    parser.error(f"argument {flag(key)}: a resumed run keeps its setting ({old!r}); "
                                 f"got {value!r}. Only {', '.join(map(flag, RESUMABLE))} may change")
        args = RunArgs(**{**saved["run"], **{k: run[k] for k in RESUMABLE if k in run}, "resume": given["resume"]})
        _check_run(parser, args)
        economy_config = _build(parser, groups, "economy", lambda: economy_from_json(saved["economy"]))
        learner_config = _build(parser, groups, "learner", lambda: LearnerConfig(**_tuples(saved["learner"])))
        return Settings(args, economy_config, learner_config)

    args = RunArgs(**run)
    _check_run(parser, args)
    economy_config = _build(parser, groups, "economy", lambda: EconomyConfig(**_tuples(economy), seed=args.seed))
    learner_config = _build(parser, groups, "learner", lambda: LearnerConfig(**learner, seed=args.seed))
    name = args.run_name or (os.path.basename(os.path.normpath(args.run_dir)) if args.run_dir else
                             f"{args.learner}_s{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}")
    args = dataclasses.replace(args, run_name=name, run_dir=args.run_dir or os.path.join("runs", name))
    if os.path.exists(os.path.join(args.run_dir, "checkpoint.pt")):
        parser.error(f"argument --run-dir: {args.run_dir!r} already holds a run; "
                     "continue it with --resume or choose another --run-name/--run-dir")
    return Settings(args, economy_config, learner_config)


def read_saved_config(parser, run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(os.path.join(run_dir, "checkpoint.pt")) or not os.path.isfile(path):
        parser.error(f"argument --resume: {run_dir!r} must hold checkpoint.pt and config.json")
    try:
        with open(path) as stream:
            saved = json.load(stream)
        assert {"run", "economy", "learner"} <= set(saved)
    except (ValueError, AssertionError):
        parser.error(f"argument --resume: {path!r} is not a train.py config (run, economy, learner)")
    return {**saved, "run": {**saved["run"], "run_dir": run_dir}}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


# -- seeding ----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """One seeding block: Python, NumPy, torch (CPU and CUDA), deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def episode_seed(seed: int, episode: int) -> int:
    """The economy's reset seed for an episode: a pure function of the run seed and the index."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


# -- logging ----------------------------------------------------------------------------------------
AVERAGED = {"mean_reward": "reward/mean", "gini": "economy/gini", "trade_volume": "economy/trade_volume",
            "births": "population/births", "deaths_age": "population/deaths_age",
            "deaths_starvation": "population/deaths_starvation", "mean_age": "population/mean_age",
            "mean_effort": "jobs/mean_effort", "trade_iterations": "trade/iterations",
            "trade_init_iterations": "trade/init_iterations"}
PER_RESOURCE = {"prices": "economy/price", "totals": "economy/total", "produced": "economy/produced"}


class Recorder:
    """Sums of the economy's per-step figures between two logs, and the dashboard's time series.

    Everything here is plain floats and arrays, saved in the checkpoint so a resumed run logs the
    same numbers. Logging reads RNG-free diagnostics only, so it never changes the trajectory.
    """

    def __init__(self, config: EconomyConfig):
        self.config = config
        self.sums, self.count, self.learned, self.learner_count = {}, 0, {}, 0
        self.ir_violation = 0.0
        self.history = {}  # dashboard key -> one entry per log (plots.DASHBOARD_KEYS)
        self.start_clock(0)

    def start_clock(self, step: int) -> None:
        """perf/steps_per_sec counts wall time from here (the loop's start) on."""
        self.clock, self.clock_step = time.perf_counter(), step

    def add(self, stats: dict, learned: dict) -> None:
        for key in (*AVERAGED, *PER_RESOURCE, "job_counts"):
            self.sums[key] = self.sums.get(key, 0.0) + np.asarray(stats[key], dtype=np.float64)
        self.ir_violation = max(self.ir_violation, float(stats["trade_ir_violation"]))
        self.count += 1
        if learned:
            for key, value in learned.items():
                self.learned[key] = self.learned.get(key, 0.0) + float(value)
            self.learner_count += 1

    def write(self, writer: SummaryWriter, step: int, broadcasts, attention, peer_mask) -> dict:
        """Log the interval's means and this step's communication figures; reset the sums."""
        mean = {key: value / max(self.count, 1) for key, value in self.sums.items()}
        scalars = {tag: float(mean[key]) for key, tag in AVERAGED.items()}
        for key, prefix in PER_RESOURCE.items():
            scalars.update({f"{prefix}/{name}": float(v) for name, v in zip(self.config.resources, mean[key])})
        shares = mean["job_counts"] / self.config.num_agents
        scalars.update({f"jobs/share/{job.name}": float(s) for job, s in zip(self.config.jobs, shares)})
        scalars["trade/ir_violation"] = self.ir_violation
        scalars.update({f"learner/{k}": v / self.learner_count for k, v in self.learned.items()})
        spectrum = metrics.covariance_spectrum(broadcasts.numpy())
        scalars["comm/participation_ratio"] = metrics.participation_ratio(spectrum)
        if attention is not None:
            scalars["social/attention_entropy"] = metrics.attention_entropy(attention.numpy(), peer_mask.numpy())
        scalars["perf/steps_per_sec"] = (step - self.clock_step) / max(time.perf_counter() - self.clock, 1e-9)
        self.start_clock(step)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        row = {"steps": step, "reward": scalars["reward/mean"], "gini": scalars["economy/gini"],
               "totals": mean["totals"], "prices": mean["prices"], "job_shares": shares, "births": mean["births"],
               "deaths_age": mean["deaths_age"], "deaths_starvation": mean["deaths_starvation"],
               "participation_ratio": scalars["comm/participation_ratio"], "spectra": spectrum,
               "attention_entropy": scalars.get("social/attention_entropy", np.nan)}
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)
            if len(self.history[key]) > MAX_HISTORY:
                self.history[key] = self.history[key][::2]
        self.sums, self.count, self.learned, self.learner_count, self.ir_violation = {}, 0, {}, 0, 0.0
        return scalars

    def snapshot(self, writer: SummaryWriter, step: int, economy: Economy, observation, actions, out, attention,
                 painter: BackgroundPainter) -> None:
        """Histograms of the population, and the dashboard image handed to ``painter`` (DESIGN.md
        section 6; `write_images` logs it once drawn).

        Ages, wealth and tastes are the population after the step; broadcasts, jobs, attention and
        trades are what the agents that acted in it did. The dashboard takes about 1.5 s to draw at 50
        agents, so a worker process draws it while training goes on."""
        state, config = economy.state, self.config
        writer.add_histogram("population/ages", state.ages, step)
        writer.add_histogram("economy/wealth", state.holdings.sum(dim=1), step)
        for r, name in enumerate(config.resources):
            writer.add_histogram(f"population/utility_weights/{name}", state.utility_weights[:, r], step)
        history = {key: np.asarray(values) for key, values in self.history.items() if values}
        if attention is not None:
            writer.add_histogram("social/attention_weights", attention[observation.peer_mask > 0], step)
            history.update(attention=attention.numpy(), peer_index=observation.peer_index.numpy())
        history.update(ages=state.ages.numpy(), broadcasts=actions.broadcast.numpy(), jobs=actions.job.numpy(),
                       resource_names=list(config.resources), job_names=[job.name for job in config.jobs],
                       max_age=config.max_age, holdings_before=out.pre_trade.numpy(),
                       holdings_after=out.trade.allocation.numpy())
        if "attention_entropy" in history and np.isnan(history["attention_entropy"]).all():
            del history["attention_entropy"]
        painter.submit(step, history, f"step {step}")

    @staticmethod
    def write_images(writer: SummaryWriter, painter: BackgroundPainter, wait: bool = False) -> None:
        """Log the dashboards drawn so far (all of them with ``wait``) at the steps they show."""
        for step, image in painter.finished(wait):
            writer.add_image("dashboard", image, step, dataformats="HWC")

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count, "learned": self.learned,
                "learner_count": self.learner_count, "ir_violation": self.ir_violation, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def wait_to_sort_after_existing_events(run_dir: str) -> None:
    """Sleep (under a second) until a new event file's name sorts after the run's existing ones.

    TensorBoard reads a folder's event files in name order: events.out.tfevents.<unix seconds>.<host>.
    <pid>.<per-process counter>, compared as text. A file created in the same second as the last one
    may sort before it (pid 10000 < 9999, counter 10 < 9), and the purge that a resumed run's file
    starts with would then be read before the events it is meant to drop.
    """
    pattern = re.compile(r"events\.out\.tfevents\.(\d+)\.")
    stamps = [int(match[1]) for match in map(pattern.match, os.listdir(run_dir)) if match]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


def hyperparameter_table(settings: Settings) -> str:
    rows = [f"| {group} | `{flag(key)}` | `{value}` |" for group, values in settings.to_json().items()
            for key, value in values.items()]
    return "\n".join(["| group | flag | value |", "|---|---|---|", *rows])


# -- training ---------------------------------------------------------------------------------------
def train(settings: Settings, learner: Optional[Learner] = None) -> str:
    """Train for settings.run.steps env steps in total; returns the run folder.

    ``learner``: an already built Learner (any algorithm following agents.base.Learner);
    default: make_learner(settings.run.learner, ...). Raises NonFiniteLossError (naming the step
    and the agent) if a loss turns NaN or inf; the last checkpoint is then left untouched.
    """
    args, run_dir = settings.run, settings.run.run_dir
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    torch.set_num_threads(args.threads or (1 if settings.economy.num_agents <= 1000 else os.cpu_count() or 1))
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
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.json"), json.dumps(settings.to_json(), indent=2))
    if step:
        wait_to_sort_after_existing_events(run_dir)
    writer = SummaryWriter(log_dir=run_dir, purge_step=step + 1 if step else None)
    if not step:
        writer.add_text("hyperparameters", hyperparameter_table(settings), 0)

    last_checkpoint = step if step else None

    def checkpoint() -> None:
        nonlocal last_checkpoint
        save_checkpoint(checkpoint_path, {
            "step": step, "episode": episode, "settings": settings.to_json(), "learner": learner.state_dict(),
            "economy": economy.state_dict(), "rng": rng_states(), "recorder": recorder.state_dict()})
        last_checkpoint = step

    painter = BackgroundPainter(plots.dashboard_image)
    recorder.start_clock(step)
    progress = tqdm(total=args.steps, initial=step, desc=settings.run.run_name, unit="step", dynamic_ncols=True,
                    mininterval=0.5)
    try:
        while step < args.steps:
            if economy.done:  # a new episode: refound the population, keep the learner
                episode += 1
                observation = economy.reset(seed=episode_seed(args.seed, episode))
            actions = learner.act(observation)
            out = economy.step(actions)
            step += 1
            try:
                learned = learner.update(out)
            except NonFiniteLossError as error:
                kept = f"{checkpoint_path} (step {last_checkpoint})" if last_checkpoint else "no checkpoint yet"
                raise NonFiniteLossError(f"step {step}: {error}; run stopped before any weight changed, "
                                         f"last good checkpoint kept: {kept}") from error
            learner.on_births(out.births)
            recorder.add(economy.last_stats, learned)

            # Logging: cheap interval means every --log-every steps, pictures every --dashboard-every.
            attention = getattr(learner, "last_attention", None)  # [N, K] for `observation`, or None
            attention = None if attention is None else attention.detach()
            if step % args.log_every == 0:
                scalars = recorder.write(writer, step, actions.broadcast, attention, observation.peer_mask)
                recorder.write_images(writer, painter)
                progress.set_postfix(reward=f"{scalars['reward/mean']:.4f}", refresh=False)
            if args.dashboard_every and step % args.dashboard_every == 0:
                recorder.snapshot(writer, step, economy, observation, actions, out, attention, painter)
            observation = out.observation

            if step % args.checkpoint_every == 0 or step == args.steps:
                checkpoint()
            progress.update(1)
        recorder.write_images(writer, painter, wait=True)
    finally:
        painter.close()
        progress.close()
        writer.close()
    return run_dir


def main(argv=None) -> None:
    settings = parse_args(argv)
    try:
        run_dir = train(settings)
    except (NonFiniteLossError, CheckpointError, ResumeError) as error:
        sys.exit(f"train.py: error: {error}")
    print(f"done: {settings.run.steps} steps in {run_dir} (tensorboard --logdir {os.path.dirname(run_dir) or '.'})")


if __name__ == "__main__":
    main()
