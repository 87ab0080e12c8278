"""Death, inheritance and reproduction (docs/design.md section 2, stage 7). No loop over agents.

Death causes are coded ALIVE (0), AGE (1), STARVATION (2); age wins when both apply.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core import state as state_module
from homoecon_env.core.state import NO_PARENT, EconomyState, normal, random_holdings, random_ids, random_tastes, uniform

ALIVE, AGE, STARVATION = 0, 1, 2
DEATH_CAUSES = {AGE: "age", STARVATION: "starvation"}


def death_causes(ages, consumed, config: EconomyConfig, need: np.ndarray) -> np.ndarray:
    """[N] int64 cause code: AGE when age >= max_age, else STARVATION when need . consumed < min_consumption."""
    cause = np.where(consumed @ need < config.min_consumption, STARVATION, ALIVE)
    return np.where(ages >= config.max_age, AGE, cause)


def bequeath(holdings, dead, agent_ids, parent_ids, parent_slots):
    """Pass each dead agent's holdings to its living children, in equal shares.

    holdings [N, R] after decay, dead [N] bool, agent_ids [N], parent_ids and parent_slots [N, 2].
    A parent still lives in the row it held at its child's birth exactly when that row's agent id is
    still the parent's id (founders' parent ids are -1, never an agent id), so children are found
    with a gather, no search, among the entries whose parent row died. Each row adds its first parent's
    share, then its second's, to what it kept, where a parent that left nothing to it adds +0.0 (as in a
    dense sum of [N, R] shares, whose signed zeros this keeps); only the heirs' rows are gathered.
    Returns (holdings [N, R] with the dead rows emptied, lost [R]: holdings of the childless dead).
    """
    n = holdings.shape[0]
    rows = np.maximum(parent_slots, 0).reshape(-1)  # [2N]: row i's parents at 2i, 2i + 1
    candidates = np.flatnonzero(dead.take(rows))  # entries whose parent row died this step
    child = candidates // 2
    is_heir = (agent_ids.take(rows[candidates]) == parent_ids.reshape(-1)[candidates]) & ~dead[child]
    heirs_at = candidates[is_heir]  # [H] entries (child, parent) in row-major order
    heir_rows = rows[heirs_at]  # the dead parent's row of each
    heirs = np.bincount(heir_rows, minlength=n)  # [N] living children of each row (0 for living rows)
    share = holdings.take(heir_rows, axis=0) / np.maximum(heirs.take(heir_rows), 1.0)[:, None]  # [H, R]
    # kept + r0 + r1 per row, r_p the share from parent p or +0.0 (x + 0.0 turns -0.0 into +0.0, so the
    # zero additions are made too, each row's in the dense sum's order)
    kept = holdings * ~dead[:, None]
    child, second = heirs_at // 2, heirs_at % 2 == 1
    first_rows, second_rows = child[~second], child[second]  # each holds a row at most once
    before = kept[first_rows]
    kept += 0.0
    kept[first_rows] = before + share[~second]
    before = kept[second_rows]
    kept[first_rows] += 0.0
    kept[second_rows] = before + share[second]
    lost = holdings.T @ (dead & (heirs == 0))
    return kept, lost


@dataclass(frozen=True)
class Births:
    """Who was born where. born [N] bool marks slots now holding a newborn."""

    born: torch.Tensor  # [N] bool
    parent_slots: torch.Tensor  # [N, 2] int64, slot of each parent at birth (-1 for founders and non-newborns)
    founders: int  # newborns without parents (fewer than two survivors)


def draw_parents(fitness, eligible, uniforms) -> np.ndarray:
    """[C, 2] slots of two distinct eligible parents per child, drawn proportional to fitness.

    ``uniforms`` [C, 2] are draws on [0, 1), one pair per child. Fitness is shifted to be positive:
    p ~ fitness - min + 1e-6 over eligible slots. Both draws are inverse-CDF lookups (O(C log E));
    the second skips the first parent's interval of the CDF, which is exact sampling without
    replacement.
    """
    eligible_slots = np.flatnonzero(eligible)
    score = fitness[eligible_slots]
    weight = score - score.min() + 1e-6  # [E] > 0
    cumulative = np.cumsum(weight)
    total = cumulative[-1]
    last = eligible_slots.size - 1
    first_draw, second_draw = uniforms.T
    first = np.minimum(_search(cumulative, first_draw * total), last)
    first_weight = weight[first]
    first_start = cumulative[first] - first_weight
    target = second_draw * (total - first_weight)
    target = np.where(target >= first_start, target + first_weight, target)
    second = np.minimum(_search(cumulative, target), last)
    tied = second == first
    if tied.any():  # float ties only: take the next eligible slot
        second = np.where(tied, (first + 1) % (last + 1), second)
    return eligible_slots[np.stack([first, second], axis=1)]


def _search(cumulative: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``np.searchsorted(cumulative, targets, side="right")``, the targets searched in increasing order (each
    search then starts where the last ended: a third of the time for 100,000 random targets)."""
    order = np.argsort(targets)
    found = np.empty(targets.shape[0], dtype=np.intp)
    found[order] = np.searchsorted(cumulative, targets[order], side="right")
    return found


def reproduce(state: EconomyState, dead, allow_births: bool, generator, config: EconomyConfig):
    """Fill every dead slot with a newborn (none when allow_births is False). NumPy state in and out.

    Parents are two distinct survivors drawn by lifetime reward; the child blends their tastes
    (a uniform crossover weight) and mutates them log-normally; each parent gives parent_share of its
    holdings per child (1 - (1 - s) ** n in all for n children this step). With fewer than two
    survivors the newborns are founders: fresh random traits and endowment, generation 0, and (in a spatial
    world) a region uniform over the grid; otherwise a newborn lives in its first parent's region.
    Returns (new state, Births with NumPy arrays).
    """
    n = state.num_slots
    if not allow_births or not dead.any():
        no_birth = Births(np.zeros(n, dtype=bool), np.full((n, 2), NO_PARENT, dtype=np.int64), 0)
        return state.replace(alive=state.alive & ~dead), no_birth
    slots = np.flatnonzero(dead)  # [D], newborns fill dead slots in slot order = birth order
    count = slots.size
    survivors = state.alive & ~dead
    holdings = state.holdings
    founders = np.count_nonzero(survivors) < 2
    fresh_holdings = False
    if founders:
        parent_slots = np.full((count, 2), NO_PARENT, dtype=np.int64)
        tastes = random_tastes(count, config.num_resources, config.heterogeneous_tastes, generator,
                               config.taste_scale)
        endowment = random_holdings(count, config, generator)
        generation = np.zeros(count, dtype=np.int64)
        parent_ids = parent_slots
        ids = random_ids(count, config.id_dim, generator)
        region = state_module.random_regions(count, config, generator)  # uniform (a draw only when spatial)
        lineage = np.arange(state.next_id, state.next_id + count)  # a founder roots its own lineage
    else:
        draws = uniform(generator, count, 3 + config.id_dim)  # per child: parents 2 | taste blend 1 | id D
        parent_slots = draw_parents(state.lifetime_reward, survivors, draws[:, :2])  # [D, 2]
        tastes = inherit_tastes(state.utility_weights.take(parent_slots, axis=0), draws[:, 2:3],
                                normal(generator, count, config.num_resources), config)
        children_per_parent = np.bincount(parent_slots.ravel(), minlength=n)  # [N]
        # 1 - (1 - s) ** c for each row's count c: the power of each count that occurs, looked up (the
        # same float64 power loop on the same values as for the whole [N] counts)
        kept_share = (1.0 - config.parent_share) ** np.arange(children_per_parent.max() + 1)
        given = 1.0 - kept_share.take(children_per_parent)  # [N] fraction of holdings given
        first, second = parent_slots[:, 0], parent_slots[:, 1]
        per_child = given / np.maximum(children_per_parent, 1)  # [N]
        # each parent's gift per child, only at the parents' rows: a row's gift is holdings * per_child there
        gifts = [holdings.take(parent, axis=0) * per_child.take(parent)[:, None] for parent in (first, second)]
        endowment = np.stack(gifts, axis=1).sum(axis=1)  # [D, R], NumPy's sum of the two (its signed zeros)
        holdings = holdings * (1.0 - given)[:, None]  # a fresh array: the newborns' rows are written into it
        fresh_holdings = True
        generation = np.maximum(state.generation.take(first), state.generation.take(second)) + 1
        parent_ids = state.agent_ids.take(parent_slots)
        ids = draws[:, 3:] * 2 - 1  # uniform on [-1, 1], as random_ids
        region = state.region[parent_slots[:, 0]]  # born in its first parent's region
        lineage = None if state.lineage is None else state.lineage[parent_slots[:, 0]]  # the first parent's line
    new_state = EconomyState(
        holdings=_with_rows(holdings, slots, endowment, copy=not fresh_holdings),
        ages=_with_rows(state.ages, slots, 0),
        utility_weights=_with_rows(state.utility_weights, slots, tastes),
        id_vectors=_with_rows(state.id_vectors, slots, ids),
        broadcast=_with_rows(state.broadcast, slots, 0.0),
        effort=_with_rows(state.effort, slots, 0.0),
        job=_with_rows(state.job, slots, -1),
        lifetime_reward=_with_rows(state.lifetime_reward, slots, 0.0),
        generation=_with_rows(state.generation, slots, generation),
        agent_ids=_with_rows(state.agent_ids, slots, np.arange(state.next_id, state.next_id + count)),
        parent_ids=_with_rows(state.parent_ids, slots, parent_ids),
        parent_slots=_with_rows(state.parent_slots, slots, parent_slots),
        alive=state.alive | dead,
        step=state.step,
        next_id=state.next_id + count,
        boom=state.boom,
        region=_with_rows(state.region, slots, region),
        region_prices=state.region_prices,
        lineage=None if state.lineage is None else _with_rows(state.lineage, slots, lineage),
    )
    all_parent_slots = _with_rows(np.full((n, 2), NO_PARENT, dtype=np.int64), slots, parent_slots)
    return new_state, Births(dead.copy(), all_parent_slots, count if founders else 0)


def _with_rows(values: np.ndarray, rows: np.ndarray, fill, copy: bool = True) -> np.ndarray:
    """A copy of ``values`` [N, ...] (``copy=False``: ``values`` itself) with ``rows`` set to ``fill``.
    A [N, W] array's rows are written as W-item records (one indexed copy per row, not per item)."""
    result = values.copy() if copy else values
    if result.ndim == 2 and result.shape[1] and result.flags.c_contiguous:
        record = np.dtype((np.void, result.itemsize * result.shape[1]))
        fill = np.ascontiguousarray(np.broadcast_to(np.asarray(fill, dtype=result.dtype), (rows.size, result.shape[1])))
        result.view(record).reshape(-1)[rows] = fill.view(record).reshape(-1)
    else:
        result[rows] = fill
    return result


def inherit_tastes(parent_tastes, blend, noise, config: EconomyConfig) -> np.ndarray:
    """[D, R] child tastes from parent tastes [D, 2, R]: the blend [D, 1] (uniform draws) of the two,
    mutated log-normally by standard normal ``noise`` [D, R], renormalised. Homogeneous tastes
    are inherited unchanged."""
    if not config.heterogeneous_tastes:
        return parent_tastes[:, 0]
    child = blend * parent_tastes[:, 0] + (1.0 - blend) * parent_tastes[:, 1]
    child = child * np.exp(config.mutation * noise) + 1e-12
    return child / child.sum(axis=1, keepdims=True)
