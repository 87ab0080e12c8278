"""Death, inheritance and reproduction (DESIGN.md section 2, stage 7). No loop over agents.

Death causes are coded ALIVE (0), AGE (1), STARVATION (2); age wins when both apply.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core.state import DTYPE, NO_PARENT, EconomyState, random_holdings, random_ids, random_tastes

ALIVE, AGE, STARVATION = 0, 1, 2
DEATH_CAUSES = {AGE: "age", STARVATION: "starvation"}


def death_causes(ages, consumed, config: EconomyConfig, need: torch.Tensor) -> torch.Tensor:
    """[N] int64 cause code: AGE when age >= max_age, else STARVATION when need . consumed < min_consumption."""
    starving = consumed @ need < config.min_consumption
    cause = torch.where(starving, STARVATION, ALIVE)
    return torch.where(ages >= config.max_age, AGE, cause)


def bequeath(holdings, dead, agent_ids, parent_ids, parent_slots):
    """Pass each dead agent's holdings to its living children, in equal shares.

    holdings [N, R] after decay, dead [N] bool, agent_ids [N], parent_ids and parent_slots [N, 2].
    A parent still lives in the row it held at its child's birth exactly when that row's agent id is
    still the parent's id (founders' parent ids are -1, never an agent id), so children are found
    with a gather, no search; each child adds its two parents' shares in turn, as dense [N, 2] math.
    Returns (holdings [N, R] with the dead rows emptied, lost [R]: holdings of the childless dead).
    """
    rows = parent_slots.clamp(min=0)  # [N, 2]
    is_heir = (agent_ids[rows] == parent_ids) & dead[rows] & ~dead[:, None]  # [N, 2]
    heir_weight = is_heir.to(holdings.dtype)
    heirs = torch.bincount(rows.view(-1), heir_weight.view(-1), minlength=holdings.shape[0])  # [N] living children
    share = holdings / heirs.clamp(min=1.0)[:, None]  # [N, R] each child's part of a row's holdings
    received = share[rows] * heir_weight[..., None]  # [N, 2, R]
    kept = holdings * (~dead)[:, None] + received[:, 0] + received[:, 1]
    lost = holdings.T @ (dead & (heirs == 0)).to(holdings.dtype)
    return kept, lost


@dataclass(frozen=True)
class Births:
    """Who was born where. born [N] bool marks slots now holding a newborn."""

    born: torch.Tensor  # [N] bool
    parent_slots: torch.Tensor  # [N, 2] int64, slot of each parent at birth (-1 for founders and non-newborns)
    founders: int  # newborns without parents (fewer than two survivors)


def draw_parents(fitness, eligible, count, generator) -> torch.Tensor:
    """[count, 2] slots of two distinct eligible parents per child, drawn proportional to fitness.

    Fitness is shifted to be positive: p ~ fitness - min + 1e-6 over eligible slots. Both draws are
    inverse-CDF lookups (O(count log E)); the second skips the first parent's interval of the CDF,
    which is exact sampling without replacement.
    """
    eligible_slots = eligible.nonzero().squeeze(1)
    score = fitness.index_select(0, eligible_slots)
    weight = score - score.min() + 1e-6  # [E] > 0
    cumulative = weight.cumsum(0)
    total = cumulative[-1]
    last = eligible_slots.numel() - 1
    first_draw, second_draw = torch.rand(count, 2, generator=generator, dtype=weight.dtype).unbind(1)
    first = torch.searchsorted(cumulative, first_draw * total, right=True).clamp_(max=last)
    first_weight = weight.index_select(0, first)
    first_start = cumulative.index_select(0, first) - first_weight
    target = second_draw * (total - first_weight)
    target = torch.where(target >= first_start, target + first_weight, target)
    second = torch.searchsorted(cumulative, target, right=True).clamp_(max=last)
    tied = second == first
    if bool(tied.any()):  # float ties only: take the next eligible slot
        second = torch.where(tied, (first + 1) % (last + 1), second)
    return eligible_slots.take(torch.stack([first, second], dim=1))


def reproduce(state: EconomyState, dead, allow_births: bool, generator, config: EconomyConfig):
    """Fill every dead slot with a newborn (none when allow_births is False).

    Parents are two distinct survivors drawn by lifetime reward; the child blends their tastes
    (a uniform crossover weight) and mutates them log-normally; each parent gives parent_share of its
    holdings per child (1 - (1 - s) ** n in all for n children this step). With fewer than two
    survivors the newborns are founders: fresh random traits and endowment, generation 0.
    Returns (new state, Births).
    """
    n = state.num_slots
    if not allow_births or not bool(dead.any()):
        no_birth = Births(torch.zeros(n, dtype=torch.bool), torch.full((n, 2), NO_PARENT, dtype=torch.long), 0)
        return state.replace(alive=state.alive & ~dead), no_birth
    slots = dead.nonzero().squeeze(1)  # [D], newborns fill dead slots in slot order = birth order
    count = slots.numel()
    survivors = state.alive & ~dead
    holdings = state.holdings
    founders = int(survivors.sum()) < 2
    if founders:
        parent_slots = torch.full((count, 2), NO_PARENT, dtype=torch.long)
        tastes = random_tastes(count, config.num_resources, config.heterogeneous_tastes, generator)
        endowment = random_holdings(count, config, generator)
        generation = torch.zeros(count, dtype=torch.long)
        parent_ids = parent_slots
    else:
        parent_slots = draw_parents(state.lifetime_reward, survivors, count, generator)  # [D, 2]
        flat_parents = parent_slots.view(-1)
        tastes = inherit_tastes(state.utility_weights.index_select(0, flat_parents).view(count, 2, -1), generator,
                                config)
        children_per_parent = torch.bincount(flat_parents, minlength=n).to(DTYPE)  # [N]
        given = 1.0 - (1.0 - config.parent_share) ** children_per_parent  # [N] fraction of holdings given
        gift_per_child = holdings * (given / children_per_parent.clamp(min=1))[:, None]  # [N, R]
        endowment = gift_per_child.index_select(0, flat_parents).view(count, 2, -1).sum(dim=1)  # [D, R]
        holdings = holdings * (1.0 - given)[:, None]
        generation = state.generation.take(parent_slots).amax(dim=1) + 1
        parent_ids = state.agent_ids.take(parent_slots)
    ids = random_ids(count, config.id_dim, generator)
    new_ids = torch.arange(state.next_id, state.next_id + count)
    born = dead.clone()  # every dead slot now holds a newborn
    new_state = state.replace(
        holdings=holdings.index_copy(0, slots, endowment),
        ages=state.ages.index_fill(0, slots, 0),
        utility_weights=state.utility_weights.index_copy(0, slots, tastes),
        id_vectors=state.id_vectors.index_copy(0, slots, ids),
        broadcast=state.broadcast.index_fill(0, slots, 0.0),
        effort=state.effort.index_fill(0, slots, 0.0),
        job=state.job.index_fill(0, slots, -1),
        lifetime_reward=state.lifetime_reward.index_fill(0, slots, 0.0),
        generation=state.generation.index_copy(0, slots, generation),
        agent_ids=state.agent_ids.index_copy(0, slots, new_ids),
        parent_ids=state.parent_ids.index_copy(0, slots, parent_ids),
        parent_slots=state.parent_slots.index_copy(0, slots, parent_slots),
        alive=state.alive | born,
        next_id=state.next_id + count,
    )
    all_parent_slots = torch.full((n, 2), NO_PARENT, dtype=torch.long).index_copy(0, slots, parent_slots)
    return new_state, Births(born, all_parent_slots, count if founders else 0)


def inherit_tastes(parent_tastes, generator, config: EconomyConfig) -> torch.Tensor:
    """[D, R] child tastes from parent tastes [D, 2, R]: random blend, log-normal mutation, renormalised."""
    if not config.heterogeneous_tastes:
        return parent_tastes[:, 0]
    count, _, num_resources = parent_tastes.shape
    blend = torch.rand(count, 1, generator=generator, dtype=DTYPE)
    child = blend * parent_tastes[:, 0] + (1.0 - blend) * parent_tastes[:, 1]
    noise = torch.randn(count, num_resources, generator=generator, dtype=DTYPE)
    child = child * torch.exp(config.mutation * noise) + 1e-12
    return child / child.sum(dim=1, keepdim=True)
