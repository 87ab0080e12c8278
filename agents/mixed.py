"""Mixed populations: several learners share one economy, each on its own slots (docs/design.md section 12).

``--learner mixed --mix llm=0.1,reinforce=0.9`` (that mix is the default): the slots are cut into
contiguous blocks by the fractions (largest remainders, in the order given; train.py refuses a mix
that leaves a group without a slot), and each
group's learner acts for its slots and learns from them only. The groups are learners by name
(agents.LEARNERS, or ``package.module:ClassName``), each built for the whole economy with the run's
LearnerConfig and its own seed (``seed + group index``).

Acting is batched by group, never a loop over agents: a learner with ``act_rows`` (agents.llm) is
asked for its slots only (one backend call for all of them); any other learner acts on the full
observation (its stacked [N, ...] tensors cover every slot) and its group's rows are taken. Its other
rows never act in the economy, and never learn: `update` hands each learner the step with every slot
outside its group marked as dead (``death_cause`` AGE), which drops those rows from its windows
(agents.reinforce, agents.ppo), so no learner learns from another's actions.

Births: a newborn joins the group of its first parent (``births.parent_slots[:, 0]``); a founder (no
parents) keeps its slot's group. Its group's learner receives the birth with the second parent
replaced by the first when the second belongs to another group (a parent's networks exist only in
its own group's learner), so a newborn inherits from its own group. Groups therefore grow and shrink
with their members' success: the fractions are those of the founders. Cultural inheritance is refused
(its teachers would be drawn among every slot of a learner, members or not).

Metrics: each group's update metrics as ``<group>/<metric>`` (a key that already starts with the group,
such as llm's ``llm/invalid_rate``, is kept), so TensorBoard shows ``learner/reinforce/loss`` beside
``learner/llm/invalid_rate``. The per-step metrics of a group that reports every step are averaged and
reported together with the other groups' window updates (every `update_every` steps, or at
truncation), because the recorder averages each key over the steps that reported anything.
`group_of` [N] names each slot's group (an index into `groups`); evaluate.py compares the groups.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput
from homoecon_env.core.lifecycle import AGE, ALIVE, Births


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"llm=0.1,reinforce=0.9"`` -> [("llm", 0.1), ("reinforce", 0.9)]; ValueError naming ``mix`` when the
    text is malformed, a learner is unknown, repeated or ``mixed``, or the fractions are not positive
    numbers summing to 1."""
    from agents import resolve_learner

    if not isinstance(text, str) or not text.strip():
        raise ValueError("mix must list fractions of slots per learner, e.g. 'llm=0.1,reinforce=0.9', got "
                         f"{text!r}")
    groups = []
    for part in text.split(","):
        name, equals, number = part.strip().rpartition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"mix: {part.strip()!r} is not learner=fraction (e.g. 'llm=0.1,reinforce=0.9')")
        try:
            fraction = float(number)
        except ValueError:
            raise ValueError(f"mix: the fraction of {name!r} is {number.strip()!r}, not a number") from None
        if not math.isfinite(fraction) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"mix: the fraction of {name!r} must be in (0, 1], got {number.strip()}")
        if name == "mixed":
            raise ValueError("mix: a mixed population cannot contain 'mixed'")
        if name in (existing for existing, _ in groups):
            raise ValueError(f"mix: learner {name!r} is listed twice")
        try:
            resolve_learner(name)
        except ValueError as error:
            raise ValueError(f"mix: {error}") from None
        groups.append((name, fraction))
    total = sum(fraction for _, fraction in groups)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"mix: the fractions must sum to 1, got {total:g} ({text})")
    return groups


def group_sizes(fractions: list[float], num_agents: int, allow_empty: bool = False) -> list[int]:
    """Slots per group: floor(f * N) plus one for the largest remainders (ties to the earlier group);
    ValueError when a group would get no slot, unless ``allow_empty`` (the learner itself runs a group
    without slots, as it runs one that died out; train.py refuses to start one, `check_mix`)."""
    exact = [f * num_agents for f in fractions]
    sizes = [math.floor(x + 1e-9) for x in exact]
    order = sorted(range(len(exact)), key=lambda g: -(exact[g] - sizes[g]))
    for g in order[:num_agents - sum(sizes)]:
        sizes[g] += 1
    if min(sizes) < 1 and not allow_empty:
        empty = [g for g, size in enumerate(sizes) if size < 1]
        raise ValueError(f"mix: with num_agents {num_agents}, groups {empty} (fractions "
                         f"{[fractions[g] for g in empty]}) get no slot; raise their fraction or num_agents")
    return sizes


def check_mix(text: str, num_agents: int) -> None:
    """The checks of `parse_mix` and `group_sizes` for an economy of ``num_agents``."""
    group_sizes([fraction for _, fraction in parse_mix(text)], num_agents)


class MixedLearner:
    """Groups of slots, one learner each (module docstring)."""

    def __init__(self, economy_config: EconomyConfig, learner_config: Optional[LearnerConfig] = None):
        from agents import make_learner

        self.economy_config = economy_config
        self.config = config = learner_config or LearnerConfig()
        if config.inheritance == "cultural":
            raise ValueError("inheritance 'cultural' is not supported by the mixed learner (teachers would be "
                             "drawn across groups); use genetic or none")
        if config.reference != "none":
            raise ValueError(f"reference {config.reference!r} is not supported by the mixed learner (a warm start "
                             "would drive only some groups' slots); use reference none")
        mix = parse_mix(config.mix)
        self.groups = [name for name, _ in mix]
        sizes = group_sizes([fraction for _, fraction in mix], economy_config.num_agents, allow_empty=True)
        self.group_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # [N]
        self.learners = [make_learner(name, economy_config, dataclasses.replace(config, seed=config.seed + g))
                         for g, name in enumerate(self.groups)]
        self.last_attention = torch.zeros(economy_config.num_agents, economy_config.peers_observed)  # [N, K]
        self._pending: dict[str, float] = {}  # sums of per-step metrics not yet reported
        self._pending_steps = 0

    @property
    def deterministic(self) -> bool:
        return all(getattr(learner, "deterministic", False) for learner in self.learners)

    @deterministic.setter
    def deterministic(self, value: bool) -> None:
        for learner in self.learners:
            if hasattr(learner, "deterministic"):
                learner.deterministic = value

    def act(self, observation: Observation) -> Actions:
        n = observation.self_features.shape[0]
        columns: dict = {}
        attention = torch.zeros(n, observation.peer_mask.shape[1])
        for g, learner in enumerate(self.learners):
            rows = (self.group_of[:n] == g).nonzero().view(-1)
            if rows.numel() == 0:
                continue
            if hasattr(learner, "act_rows"):
                part = learner.act_rows(observation, rows)
                take = None
            else:
                part = learner.act(observation)
                take = rows
            for field in dataclasses.fields(Actions):
                value = getattr(part, field.name)
                if value is None:
                    continue
                value = torch.as_tensor(value)
                if take is not None:
                    value = value.index_select(0, take)
                if field.name not in columns:
                    columns[field.name] = torch.zeros((n, *value.shape[1:]), dtype=value.dtype)
                columns[field.name].index_copy_(0, rows, value.to(columns[field.name].dtype))
            weights = getattr(learner, "last_attention", None)
            if weights is not None and weights.shape[0] == n:
                attention.index_copy_(0, rows, weights.detach().index_select(0, rows).float())
        self.last_attention = attention
        return Actions(**columns)

    def _group_step(self, step: StepOutput, g: int) -> StepOutput:
        """``step`` as group g's learner sees it: every slot outside the group died (so it learns nothing)."""
        outside = self.group_of != g
        cause = torch.where(outside & (step.death_cause == ALIVE), torch.full_like(step.death_cause, AGE),
                            step.death_cause)
        return dataclasses.replace(step, death_cause=cause)

    def update(self, step: StepOutput) -> dict:
        reported, every_step = {}, {}
        for g, (name, learner) in enumerate(zip(self.groups, self.learners)):
            metrics = learner.update(self._group_step(step, g))
            named = {key if key.startswith(f"{name}/") else f"{name}/{key}": float(value)
                     for key, value in metrics.items()}
            (every_step if hasattr(learner, "act_rows") else reported).update(named)
        for key, value in every_step.items():
            self._pending[key] = self._pending.get(key, 0.0) + value
        self._pending_steps += 1
        if not reported and self._pending_steps < self.config.update_every and not step.truncated:
            return {}
        if self._pending:
            reported.update({key: value / self._pending_steps for key, value in self._pending.items()})
        self._pending, self._pending_steps = {}, 0
        return reported

    def on_births(self, births: Births) -> None:
        born = births.born
        parents = births.parent_slots
        first = parents[:, 0]
        has_parents = born & (first >= 0)
        self.group_of = torch.where(has_parents, self.group_of[first.clamp(min=0)], self.group_of)
        for g, learner in enumerate(self.learners):
            mine = born & (self.group_of == g)
            second = parents[:, 1]
            same = (second >= 0) & (self.group_of[second.clamp(min=0)] == g)
            own_parents = torch.stack([first, torch.where(same, second, first)], dim=1)
            own_parents = torch.where(mine[:, None], own_parents, torch.full_like(own_parents, -1))
            founders = int((mine & (first < 0)).sum())
            learner.on_births(Births(born=mine, parent_slots=own_parents, founders=founders))

    def state_dict(self) -> dict:
        return {"kind": "mixed", "groups": list(self.groups), "group_of": self.group_of.clone(),
                "learners": [learner.state_dict() for learner in self.learners],
                "pending": dict(self._pending), "pending_steps": self._pending_steps}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "mixed" or list(state.get("groups", [])) != self.groups:
            raise ValueError(f"learner state is for {state.get('kind')!r} with groups {state.get('groups')}, this "
                             f"learner is 'mixed' with groups {self.groups}")
        if tuple(state["group_of"].shape) != tuple(self.group_of.shape):
            raise ValueError(f"learner state's group_of is {tuple(state['group_of'].shape)}, expected "
                             f"{tuple(self.group_of.shape)}")
        for learner, part in zip(self.learners, state["learners"]):
            learner.load_state_dict(part)
        self.group_of = state["group_of"].clone()
        self._pending, self._pending_steps = dict(state["pending"]), int(state["pending_steps"])
