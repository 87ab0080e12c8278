"""Which rollouts evaluate.py runs: the main ones, the supply-chain references, the migration-cost sweep and
the ablation arms, each a keyed `homoecon_lab.rollouts.Task` (docs/design.md sections 6 and 9).

The ablations' arms and defaults live here; `homoecon_lab.evaluation` checks the flags against them and
`homoecon_lab.evaluation_sections` reads the traces back by the same keys.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

from agents import is_import_path
from homoecon_env.config import EconomyConfig
from homoecon_env.core.production import JobTable
from homoecon_lab.rollouts import Task
from homoecon_lab.seeding import derive_seed

if TYPE_CHECKING:  # evaluation imports this module; the names serve the annotations only
    from homoecon_lab.evaluation import Args, Source

STREAM_MAIN, STREAM_TRAIN, STREAM_HELD_OUT = 0, 1, 2  # seed streams (see homoecon_lab.seeding.derive_seed)

ABLATION_ARMS = {  # arm -> (learner, heterogeneous tastes; None: the evaluated economy's setting)
    "learned": ("reinforce", None),
    "uniform": ("uniform_attention", None),
    "heterogeneous": ("reinforce", True),
    "homogeneous": ("reinforce", False),
    "random": ("random", None),
}
# learners that train before their frozen evaluation (plug-ins too)
LEARNING_ARMS = ("reinforce", "uniform_attention", "ppo", "mixed")
ABLATIONS = {"social_filter": ("learned", "uniform"), "tastes": ("heterogeneous", "homogeneous"),
             "policy": ("trained", "random")}
# Economies whose jobs use inputs: policies that run beside the main rollouts, on the same economy seeds
CHAIN_REFERENCES = ("scripted_chain", "scripted", "random")
# the inheritance ablation (docs/design.md section 9): arm "inheritance_<mode>" trains the evaluated learner
# (reinforce when it has no networks to inherit) with LearnerConfig.inheritance = mode; compared with genetic
INHERITANCE_ARMS = ("genetic", "cultural", "none")
INHERITING_LEARNERS = ("reinforce", "uniform_attention", "ppo")
# The positive control (docs/design.md section 11), on economies with private signals only: the scripted
# policy that listens to scouts against the best scripted policy that ignores peers. They never train.
POSITIVE_CONTROL_ARMS = {"listener": ("agents.scripted:ScriptedListener", None),
                         "ignorer": ("agents.scripted:ScriptedIgnorer", None)}
POSITIVE_CONTROL = {"positive_control": ("listener", "ignorer")}
ALL_ABLATIONS = (*ABLATIONS, *POSITIVE_CONTROL, "inheritance")  # what --ablations may choose
# The ablation settings left unset (None) take these, a scenario's own first: the positive control's learners
# need about 50,000 steps to find the scouts, and its question is the social filter's
ABLATION_DEFAULTS = {"ablation_train_steps": 500, "ablation_steps": 100, "ablations": ALL_ABLATIONS}
SCENARIO_ABLATION_DEFAULTS = {"private_signals": {"ablation_train_steps": 50_000, "ablation_steps": 200,
                                                  "ablations": ("social_filter", "positive_control")}}


def with_defaults(args: Args, scenario: Optional[str], warm_start: int = 0) -> Args:
    """``args`` with every unset ablation setting given its default for ``scenario`` (ABLATION_DEFAULTS,
    SCENARIO_ABLATION_DEFAULTS); settings given stay. ``warm_start``: the evaluated learner's reference warm
    start (`LearnerConfig.reference_steps`), which an arm's default training adds to its steps, so that every
    arm learns past it as long as other arms learn at all."""
    defaults = {**ABLATION_DEFAULTS, **SCENARIO_ABLATION_DEFAULTS.get(scenario or "", {})}
    defaults["ablation_train_steps"] += warm_start
    return dataclasses.replace(args, **{key: value for key, value in defaults.items() if getattr(args, key) is None})


def chosen_pairs(args: Args, economy: EconomyConfig) -> dict[str, tuple[str, str]]:
    """The paired ablations --ablations chose: name -> (first arm, second arm); the positive control only on
    economies with private signals."""
    pairs = {**ABLATIONS, **(POSITIVE_CONTROL if economy.private_signals else {})}
    return {name: pair for name, pair in pairs.items() if name in args.ablations}


def plan_tasks(args: Args, source: Source) -> tuple[list[Task], dict[str, tuple]]:
    """The main rollouts and the ablation rollouts (arms sharing a setting share a task).

    Returns the tasks and, for every ablation arm, the key stem of its tasks (key + (seed index,)).
    """
    args = with_defaults(args, source.scenario, source.learner_config.reference_steps)
    trained = "run" if source.run_dir else source.learner_name
    tasks = [Task(key=("main", k), economy=source.economy, learner=trained,
                  learner_config=dataclasses.replace(source.learner_config, seed=args.seed + k),
                  economy_seed=derive_seed(args.seed, STREAM_MAIN, k), steps=args.steps, learn=args.learn,
                  run_dir=source.run_dir, detail=True, frames=args.frames if k == 0 else 0,
                  deterministic=args.deterministic)
             for k in range(args.seeds)]
    if JobTable.from_config(source.economy).needs_inputs:  # supply chains: reference policies, same seeds
        tasks += [Task(key=("reference", learner, k), economy=source.economy, learner=learner,
                       learner_config=dataclasses.replace(source.learner_config, seed=args.seed + k),
                       economy_seed=derive_seed(args.seed, STREAM_MAIN, k), steps=args.steps, learn=False)
                  for learner in CHAIN_REFERENCES if learner != trained for k in range(args.seeds)]
    tasks += [Task(key=key, economy=source.economy.replace(migration_cost=float(cost)), learner=trained,
                   learner_config=dataclasses.replace(source.learner_config, seed=args.seed + k),
                   economy_seed=derive_seed(args.seed, STREAM_MAIN, k), steps=args.steps, learn=args.learn,
                   run_dir=source.run_dir, deterministic=args.deterministic)
              for key, cost, k in space_sweep_keys(args, source) if key[0] == "space_sweep"]
    if not args.ablation_seeds:
        return tasks, {}
    arms = dict(ABLATION_ARMS)
    if source.economy.private_signals:
        arms.update(POSITIVE_CONTROL_ARMS)
    arms["trained"] = ("run", None) if source.run_dir else (source.learner_name, None)  # reinforce: the "learned" arm
    wanted = {arm for name, pair in chosen_pairs(args, source.economy).items() for arm in pair}  # --ablations
    stems: dict[str, tuple] = {}
    for arm, (learner, heterogeneous) in arms.items():
        if arm in wanted:
            tastes = source.economy.heterogeneous_tastes if heterogeneous is None else heterogeneous
            stems[arm] = ("ablation", learner, tastes, source.learner_config.inheritance)
    inheriting = source.learner_name if source.learner_name in INHERITING_LEARNERS else "reinforce"
    for mode in INHERITANCE_ARMS if "inheritance" in args.ablations else ():  # genetic: usually the learned arm's
        stems[f"inheritance_{mode}"] = ("ablation", inheriting, source.economy.heterogeneous_tastes, mode)
    lineage_stems = {stems[f"inheritance_{mode}"] for mode in INHERITANCE_ARMS if f"inheritance_{mode}" in stems}
    for stem in dict.fromkeys(stems.values()):
        _, learner, tastes, inheritance = stem
        scripted = learner in {path for path, _ in POSITIVE_CONTROL_ARMS.values()}
        trains = (learner in LEARNING_ARMS or is_import_path(learner)) and not scripted
        for i in range(args.ablation_seeds):
            train_seed = derive_seed(args.seed, STREAM_TRAIN, i)
            tasks.append(Task(key=stem + (i,), economy=source.economy.replace(heterogeneous_tastes=tastes),
                              learner=learner, learner_config=dataclasses.replace(
                                  source.learner_config, seed=train_seed % 2**31, inheritance=inheritance),
                              economy_seed=derive_seed(args.seed, STREAM_HELD_OUT, i), steps=args.ablation_steps,
                              learn=False, run_dir=source.run_dir, train_seed=train_seed,
                              train_steps=args.ablation_train_steps if trains else 0,
                              lineage=stem in lineage_stems))
    return tasks, stems



def space_sweep_keys(args: Args, source: Source) -> list[tuple[tuple, float, int]]:
    """(task key, migration cost, seed index) of every rollout of the migration-cost sweep (spatial economies):
    the main rollouts serve the evaluated economy's own cost (same learner, seeds and steps)."""
    if not source.economy.spatial:
        return []
    own = source.economy.migration_cost
    return [(("main", k) if float(cost) == own else ("space_sweep", float(cost), k), float(cost), k)
            for cost in args.migration_costs for k in range(args.seeds)]
