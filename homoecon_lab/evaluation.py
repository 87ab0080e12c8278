"""evaluate.py's settings and the run of an evaluation (docs/design.md section 6).

`Args` and `check_args` are evaluate.py's flags and their checks; `load_source` reads the evaluated
economy and learner (a trained run, or a scenario's defaults). `evaluate(args)` plans the rollouts
(`homoecon_lab.evaluation_plan`), runs them (`homoecon_lab.runners.run_tasks`), turns the traces into numbers
(homoecon_env.diagnostics.analysis, `homoecon_lab.evaluation_sections`) and figures (report_figures), and
writes metrics.json, report.md, genealogy.csv, genealogy.graphml and the figures to ``args.out``, each
atomically.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Literal, Optional

from agents import LearnerConfig, resolve_learner
from agents.checkpoint import load_checkpoint
from agents.config import check_device_name, learner_device
from homoecon_env.config import EconomyConfig
from homoecon_env.diagnostics import analysis, lineage, report_figures, space, supply_chain
from homoecon_env.diagnostics.report import NEAR_UNIFORM_ENTROPY, render_report
from homoecon_env.files import atomic_write_text
from homoecon_env.scenarios import check_scenario, scenario_config
from homoecon_lab import llm_groups, rundir
from homoecon_lab.evaluation_plan import ABLATION_DEFAULTS, ALL_ABLATIONS, chosen_pairs, plan_tasks, with_defaults
from homoecon_lab.evaluation_sections import chain_results, inheritance_results, scout_results, seasons, space_results
from homoecon_lab.ray_runner import require_ray
from homoecon_lab.runners import BACKENDS, run_tasks
from homoecon_lab.settings import MAX_SEED, read_run_config


@dataclass(frozen=True)
class Args:
    """What to evaluate, for how long, and where to write."""

    run: Optional[str] = None
    """trained run folder from train.py (config.json, checkpoint.pt); default: untrained REINFORCE agents"""
    learner: Optional[str] = None
    """the learner to evaluate untrained: a name in agents.LEARNERS or a plug-in's package.module:ClassName
    (default reinforce); with --run, the run's own learner (another one is refused)"""
    scenario: Optional[str] = None
    """the economy: a name in homoecon_env.scenarios.SCENARIOS (default seed); with --run, the run's own,
    read from its config.json (another one is refused)"""
    out: str = "eval_out"
    """output folder (created if missing; the files in it are replaced atomically)"""
    steps: int = 300
    """env steps per main rollout (a full cycle of the default seasons is 200 steps)"""
    seeds: int = 3
    """main rollouts, one economy seed each; the figures show the first"""
    seed: int = 0
    """base seed from which every rollout's economy and learner seeds are derived"""
    num_agents: Optional[int] = None
    """population size; default: the run's, else the scenario's (50 for seed)"""
    broadcast_mode: Optional[str] = None
    """the messages: continuous or symbolic (docs/design.md section 11); default: the run's, else the scenario's"""
    vocab_size: Optional[int] = None
    """V, symbols per token in the symbolic mode; default: the run's, else the scenario's"""
    message_length: Optional[int] = None
    """L, tokens per message in the symbolic mode; default: the run's, else the scenario's"""
    learn: bool = True
    """learners keep learning during the main rollouts (--no-learn: frozen weights)"""
    deterministic: bool = False
    """the main rollouts act with each policy's mode (most likely job, Gaussian means squashed) instead of
    sampling; for learners with a `deterministic` attribute (reinforce, uniform_attention, ppo). With
    --no-learn: the usual frozen evaluation of a trained policy"""
    frames: int = 10
    """trade-scatter frames, evenly spaced over the first rollout (the GIF's frames too)"""
    ablation_seeds: int = 5
    """paired seeds per ablation arm (0 skips the ablations)"""
    ablations: Optional[tuple[str, ...]] = None
    """the ablations to run (only their arms train): social_filter (learned vs uniform attention), tastes,
    policy (trained vs random), positive_control (scripted listener vs ignorer; economies with private
    signals only), inheritance (genetic, cultural, none); default all, on private_signals social_filter
    and positive_control"""
    ablation_train_steps: Optional[int] = None
    """steps each ablation arm trains from fresh networks, per seed; default 500, on private_signals 50,000
    (its learners need that long to find the scouts), plus a run's reference warm start (--reference-steps,
    agents.reference: 4,000 for a supply_chain run of train.py's defaults)"""
    ablation_steps: Optional[int] = None
    """frozen evaluation steps per ablation arm and seed, on a held-out economy seed; default 100, on
    private_signals 200"""
    workers: int = 2
    """rollouts and ablation arms run at once: processes (1: all in this process), or Ray tasks with --backend ray"""
    threads: int = 1
    """torch CPU threads per process (per Ray task)"""
    backend: Literal["process", "ray"] = "process"
    """where the rollouts run: a pool of local processes, or Ray tasks of one CPU each (the [ray] extra)"""
    address: Optional[str] = None
    """with --backend ray: a running Ray cluster's address (auto, host:6379); default: start a local instance"""
    device: Optional[str] = None
    """where reinforce, uniform_attention and ppo keep their tensors (cpu, cuda, cuda:N); default: the run's
    --device, else cpu. A checkpoint loads onto any device (a run trained on a GPU evaluates on a CPU)"""
    migration_costs: tuple[float, ...] = space.SWEEP_COSTS
    """spatial economies only: the migration costs of the law-of-one-price sweep, --seeds rollouts of --steps
    steps each (the evaluated learner, the main rollouts' seeds); none: no sweep"""


def check_args(args: Args) -> None:
    """Refuse bad settings before anything runs; ValueError names the flag and the allowed range."""
    minimum = {"steps": 2, "seeds": 1, "frames": 1, "ablation_seeds": 0, "ablation_train_steps": 0,
               "ablation_steps": 2, "workers": 1, "threads": 1, "seed": 0}
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is None and name in ABLATION_DEFAULTS:  # the scenario's default (`with_defaults`)
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= {low}, got {value!r}")
    if args.seed + args.seeds - 1 > MAX_SEED:  # rollout k seeds NumPy's global generator with seed + k
        raise ValueError(f"--seed must be an int <= {MAX_SEED} - (--seeds - 1) = {MAX_SEED - args.seeds + 1}, "
                         f"got {args.seed}")
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
    if args.address is not None and (args.backend != "ray" or not isinstance(args.address, str) or not args.address):
        raise ValueError(f"--address {args.address!r}: an address applies only with --backend ray, and is a "
                         "non-empty string (e.g. auto, or host:6379)")
    costs = args.migration_costs
    if not isinstance(costs, (tuple, list)) or any(
            isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c <= 1.0 for c in costs):
        raise ValueError(f"--migration-costs must be numbers in [0, 1] (a fraction of each holding), got {costs!r}")
    if len(set(costs)) != len(costs):
        raise ValueError(f"--migration-costs must not repeat a cost, got {costs!r}")
    if args.device is not None:
        try:
            check_device_name(args.device)
        except ValueError as error:
            raise ValueError(f"--{error}") from None
    if args.backend == "ray":
        require_ray()  # a missing extra is reported before any work starts
    chosen = args.ablations
    if chosen is not None and (not isinstance(chosen, (tuple, list)) or not chosen
                               or any(a not in ALL_ABLATIONS for a in chosen) or len(set(chosen)) != len(chosen)):
        raise ValueError(f"--ablations must name one or more of {', '.join(ALL_ABLATIONS)}, each once, got "
                         f"{chosen!r}")
    if args.ablation_seeds == 1:
        raise ValueError("--ablation-seeds must be 0 (no ablations) or >= 2 (a confidence interval needs two)")
    if args.num_agents is not None and (not isinstance(args.num_agents, int) or args.num_agents < 2):
        raise ValueError(f"--num-agents must be an int >= 2, got {args.num_agents!r}")
    if args.learner is not None:
        try:
            resolve_learner(args.learner)
        except ValueError as error:  # "learner 'x': ..." -> "--learner 'x': ..."
            raise ValueError(f"--{error}") from None
    if args.scenario is not None:
        try:
            check_scenario(args.scenario)
        except ValueError as error:
            raise ValueError(f"--scenario: {error}") from None
    if args.run is not None:
        try:
            rundir.check_resumable(args.run)
        except ValueError as error:
            raise ValueError(f"--run {error}") from None


MESSAGE_FLAGS = ("broadcast_mode", "vocab_size", "message_length")  # EconomyConfig fields evaluate.py sets
# Learner settings an untrained evaluation of a scenario starts from (a trained run brings its own).
# The positive control needs the two learning fixes of docs/design.md section 11 (both arms of every
# ablation get them alike) and the plain mean beside the learned context (uniform attention ignores it);
# everything else runs LearnerConfig() as before.
SCENARIO_LEARNER_SETTINGS = {"private_signals": {"horizon_baseline": True, "inherit_optimizer": True,
                                                 "mean_context": True}}


@dataclass(frozen=True)
class Source:
    """Where the evaluated economy and learner come from: a trained run, or fresh defaults."""

    economy: EconomyConfig
    learner_name: str  # the run's learner, else --learner (default "reinforce")
    learner_config: LearnerConfig
    run_dir: Optional[str]  # None: untrained
    scenario: str = "seed"  # the run's (config.json), else --scenario


def load_source(args: Args) -> Source:
    """The run's economy and learner settings (checked against --num-agents), or the defaults; --device
    replaces the learners' device (ValueError naming --device where it does not exist)."""
    source = _source(args)
    if args.device is not None:
        source = dataclasses.replace(source, learner_config=dataclasses.replace(source.learner_config,
                                                                                device=args.device))
    try:
        learner_device(source.learner_config.device)
    except ValueError as error:  # "device 'cuda': ..." -> "--device 'cuda' (the run's device): ..."
        text = str(error) if args.device is not None else str(error).replace(":", " (the run's device):", 1)
        raise ValueError(f"--{text}") from None
    return source


def _source(args: Args) -> Source:
    messages = {name: getattr(args, name) for name in MESSAGE_FLAGS if getattr(args, name) is not None}
    if args.run is None:
        scenario = args.scenario or "seed"
        try:
            economy = scenario_config(scenario, **messages,
                                      **({} if args.num_agents is None else {"num_agents": args.num_agents}))
        except ValueError as error:  # e.g. "broadcast_mode must be one of ..." -> "--broadcast-mode: ..."
            name = next((n for n in messages if n in str(error)), None)
            raise ValueError(f"--{name.replace('_', '-')}: {error}" if name else str(error)) from None
        learner_config = LearnerConfig(**SCENARIO_LEARNER_SETTINGS.get(scenario, {}))
        return Source(economy, args.learner or "reinforce", learner_config, None, scenario)
    try:
        saved = read_run_config(os.path.join(args.run, "config.json"))
        load_checkpoint(os.path.join(args.run, "checkpoint.pt"))  # refuse a corrupt checkpoint before running
    except ValueError as error:  # CheckpointError included
        raise ValueError(f"--run {args.run!r}: {error}") from None
    economy = saved.economy
    if args.num_agents is not None and args.num_agents != economy.num_agents:
        raise ValueError(f"--num-agents {args.num_agents}: the run in {args.run!r} was trained with "
                         f"{economy.num_agents} agents (its networks are per agent); leave --num-agents out")
    for name, value in messages.items():
        if value != getattr(economy, name):
            raise ValueError(f"--{name.replace('_', '-')} {value!r}: the run in {args.run!r} was trained with "
                             f"{name}={getattr(economy, name)!r} (its networks read those messages); leave it out")
    if args.learner is not None and args.learner != saved.run.learner:
        raise ValueError(f"--learner {args.learner!r}: the run in {args.run!r} was trained with learner "
                         f"{saved.run.learner!r} (its checkpoint holds that learner's state); leave --learner out")
    if args.scenario is not None and args.scenario != saved.run.scenario:
        raise ValueError(f"--scenario {args.scenario!r}: the run in {args.run!r} was trained on scenario "
                         f"{saved.run.scenario!r} (config.json holds its economy); leave --scenario out")
    return Source(economy, saved.run.learner, saved.learner, args.run, saved.run.scenario)


# -- files ------------------------------------------------------------------------------------------
def write_genealogy(path: str, rows: list[dict]) -> None:
    """genealogy.csv: one row per agent of the first rollout (atomic)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# -- evaluation -----------------------------------------------------------------------------------
def evaluate(args: Args) -> dict:
    """Run the evaluation described in the module docstring; write every output to ``args.out``.

    Returns the metrics dict that metrics.json holds. Raises ValueError on bad settings (before running).
    """
    check_args(args)
    start = time.perf_counter()
    source = load_source(args)
    args = with_defaults(args, source.scenario, source.learner_config.reference_steps)
    config = source.economy
    os.makedirs(args.out, exist_ok=True)

    # Rollouts: the main ones and every ablation arm, in parallel under one progress bar.
    tasks, stems = plan_tasks(args, source)
    results = run_tasks(tasks, args.workers, args.threads, args.backend, args.address)
    traces = [results[("main", k)] for k in range(args.seeds)]

    # Numbers.
    season = seasons(config, args.steps)
    per_seed = [analysis.summarise_rollout(trace, config, season) for trace in traces]
    goods, job_names = list(config.resources), [job.name for job in config.jobs]
    chain = "chain" in traces[0]  # the jobs use inputs: the supply-chain numbers, figures and section
    if chain:
        for summary, trace in zip(per_seed, traces):
            summary.update(supply_chain.rollout_outcome(trace, goods, job_names))
    if config.spatial:  # docs/design.md section 13: maps, the law of one price, territory, migration
        for summary, trace in zip(per_seed, traces):
            summary.update(space.summarise_space(trace, config.num_regions))
    lineage_summary, rows = analysis.genealogy(traces[0], list(config.resources))
    ablations, outcomes = {}, None
    if stems:
        outcomes = {arm: [analysis.ablation_outcome(results[stem + (i,)], config.num_jobs)
                          for i in range(args.ablation_seeds)] for arm, stem in stems.items()}
        ablations = {name: analysis.compare({first: outcomes[first], second: outcomes[second]}, first, second)
                     for name, (first, second) in chosen_pairs(args, config).items()}
    inheritance = inheritance_results(traces, outcomes if "inheritance_genetic" in stems else None, stems, results,
                                      args.ablation_seeds)

    # Files: figures, genealogy, then metrics.json and report.md from one dict.
    figures = report_figures.draw_figures(traces[0], config, args.out)
    if chain:
        figures.update(report_figures.draw_chain_figures(traces[0], config, args.out))
    space_result = space_results(args, source, results) if config.spatial else None
    if space_result:
        figures.update(report_figures.draw_space_figures(traces[0], config.world_width, config.world_height, goods,
                                                         args.out))
        if space_result["sweep"]:
            figures.update(report_figures.draw_space_sweep(space_result["sweep"], args.out))
    write_genealogy(os.path.join(args.out, "genealogy.csv"), rows)
    lineage.write_graphml(os.path.join(args.out, "genealogy.graphml"),
                          lineage.lineage_graph(traces[0]["agents"], set(traces[0]["alive_at_end"])))
    meta = {"run": args.run, "learner": source.learner_name, "learn": args.learn, "num_agents": config.num_agents,
            "steps": args.steps, "seeds": args.seeds, "early_steps": analysis.edge_windows(args.steps)[0].stop,
            "snapshots": len(traces[0]["cross_sections"]), "broadcast_dim": config.message_width,
            "broadcast_mode": config.broadcast_mode, "vocab_size": config.vocab_size,
            "message_length": config.message_length,
            "resources": list(config.resources), "jobs": [job.name for job in config.jobs],
            "ci_percent": analysis.CI_PERCENT, "near_uniform_entropy": NEAR_UNIFORM_ENTROPY,
            "top_share": analysis.TOP_SHARE, "min_life_steps": analysis.MIN_LIFE_STEPS,
            "ablation_seeds": args.ablation_seeds, "ablation_train_steps": args.ablation_train_steps,
            "ablations": list(args.ablations),
            "ablation_steps": args.ablation_steps, "wall_seconds": round(time.perf_counter() - start, 1)}
    meta["scenario"] = source.scenario
    # steps after which the learner reported an update: 0 with learning on means it never learns (scripted, random)
    meta["updates"] = int(sum(trace.get("updates", 0) for trace in traces))
    meta["deterministic"] = args.deterministic
    result = analysis.to_json({"meta": meta, "args": dataclasses.asdict(args), "economy": dataclasses.asdict(config),
                               "learner_config": dataclasses.asdict(source.learner_config),
                               "main": {"summary": analysis.summarise_seeds(per_seed), "per_seed": per_seed},
                               "genealogy": lineage_summary, "ablations": ablations, "inheritance": inheritance,
                               "figures": figures})
    if config.private_signals:
        result["positive_control"] = analysis.to_json(scout_results(result["main"]["summary"], results, stems,
                                                                    args.ablation_seeds, config.num_jobs))
    if space_result:
        result["space"] = analysis.to_json(space_result)
    if chain:
        summary = result["main"]["summary"]
        result["supply_chain"] = analysis.to_json(chain_results(args, source, traces, results, summary))
    report = render_report(result)
    if "groups" in traces[0]:  # a mixed population: its learner groups compared (docs/design.md section 12)
        result["groups"] = analysis.to_json(llm_groups.group_comparison([t["groups"] for t in traces], job_names))
        report += "\n" + llm_groups.groups_section(result["groups"], job_names)
    atomic_write_text(os.path.join(args.out, "metrics.json"), json.dumps(result, indent=2))
    atomic_write_text(os.path.join(args.out, "report.md"), report)
    return result


