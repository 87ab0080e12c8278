"""Grouped market clearing: section 4's problem solved separately within each group of agents (the
regions of docs/design.md section 13), all groups in one batched solve.

Agents i with ``groups[i] = g`` trade only with each other: goods are conserved per group and good,
and each group has its own prices lambda_g [R]. The problem is separable across groups, so its dual
is a sum of G independent duals over R prices each, and Newton's method on it (``newton.py``) runs
on all groups at once: every agent's response depends only on its own group's prices, per-group
sums are segment sums over agents sorted by group (``np.add.reduceat``), the Hessian is G
independent R x R blocks solved as one batch, and the line search keeps a step, a bracket and a
verdict per group. A group stops as soon as its own result is certified (KKT residual <= tol);
the others go on. A (group, good) cell nobody in the group holds or values is not traded there:
its weights are masked to 0 (no agent of the group demands it; an agent never sees another
group's goods at all), its price is 0, and its goods stay with their owners.

A group that the batched Newton leaves uncertified (never seen in tests; the plain solver's
corner cases) is passed, alone, to the plain solver with projected-gradient polish (``pgd``), so
the guarantees are those of section 4 in every group.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .market import _market_data
from .pgd import PGD_MAX_ITER, _solve_pgd


class _Groups(NamedTuple):
    """Agents sorted by group: ``order`` [N] (stable), the non-empty groups' ids ``present`` [G'],
    their first positions in sorted order ``starts`` [G'] and sizes ``counts`` [G'], and each
    sorted agent's index among the non-empty groups ``segment`` [N]."""

    order: np.ndarray
    present: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    segment: np.ndarray


def check_groups(groups, num_agents: int, num_groups) -> tuple:
    """``groups`` as an int64 NumPy array [N] with values in [0, G), and G (``num_groups``, or
    groups.max() + 1 when None, 0 for no agents). Raises ValueError naming the argument."""
    if num_groups is not None and (not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool)
                                   or num_groups < 1):
        raise ValueError(f"num_groups: {num_groups!r}; expected an integer >= 1 or None")
    if isinstance(groups, torch.Tensor):
        if groups.dtype == torch.bool or groups.dtype.is_floating_point or groups.dtype.is_complex:
            raise ValueError(f"groups: dtype {groups.dtype}; expected an integer tensor (int64) of group indices")
        array = groups.detach().to("cpu").numpy()
    else:
        try:
            array = np.asarray(groups)
        except (TypeError, ValueError) as error:
            raise ValueError(f"groups: cannot convert {type(groups).__name__} to an array ({error})") from None
        if array.size == 0 and array.dtype == np.float64:  # an empty list
            array = array.astype(np.int64)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"groups: dtype {array.dtype}; expected integer group indices")
    if array.shape != (num_agents,):
        raise ValueError(f"groups: shape {tuple(array.shape)}; expected ({num_agents},), one group per agent")
    array = array.astype(np.int64)
    if num_agents and array.min() < 0:
        raise ValueError(f"groups: contains {int(array.min())}; expected indices >= 0")
    if num_groups is None:
        num_groups = int(array.max()) + 1 if num_agents else 0
    elif num_agents and array.max() >= num_groups:
        raise ValueError(f"groups: contains {int(array.max())}; expected indices < num_groups={num_groups}")
    return array, int(num_groups)


def _sort_groups(groups: np.ndarray, num_groups: int) -> _Groups:
    order = np.argsort(groups, kind="stable")
    counts_all = np.bincount(groups, minlength=num_groups)
    present = np.flatnonzero(counts_all)
    counts = counts_all[present]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    segment = np.repeat(np.arange(len(present)), counts)
    return _Groups(order, present, starts, counts, segment)


class GroupedSolution(NamedTuple):
    """A grouped solve on [R, N] arrays: allocation x, prices [G, R] (unnormalised multipliers,
    0 for untraded cells, every cell of an empty group 0), IR multipliers mu [N], figures."""

    allocation: np.ndarray
    prices: np.ndarray
    multipliers: np.ndarray
    iterations: int
    init_iterations: int
    outer_iterations: int
    kkt_residuals: np.ndarray  # [G'] per non-empty group
    priced: np.ndarray  # [G] bool: the group has agents and trades some good


def _solve_one_group(e, w, tol, max_iter, init_max_iter, warm_multipliers):
    """The plain solver (pgd, dual start) on one group's [R, n] arrays."""
    data = _market_data(e, w)
    return data, _solve_pgd(data, tol, max_iter or PGD_MAX_ITER, "dual", init_max_iter, None, warm_multipliers,
                            None, True)


def solve_groups_one_by_one(e, w, groups: np.ndarray, num_groups: int, tol, max_iter, init_max_iter,
                            warm_multipliers: Optional[np.ndarray]) -> GroupedSolution:
    """Each group alone through the plain solver: the reference path, and the fallback."""
    num_goods, num_agents = e.shape
    sorted_groups = _sort_groups(groups, num_groups)
    x = np.array(e)
    prices = np.zeros((num_groups, num_goods))
    mu = np.zeros(num_agents)
    residuals = np.zeros(len(sorted_groups.present))
    iterations = init_iterations = outer_iterations = 0
    priced = np.zeros(num_groups, dtype=bool)
    for index, (group, start, count) in enumerate(zip(sorted_groups.present.tolist(), sorted_groups.starts.tolist(),
                                                      sorted_groups.counts.tolist())):
        members = sorted_groups.order[start:start + count]
        warm = None if warm_multipliers is None else warm_multipliers[members]
        _, (xg, lam, mug, its, outer, init_its, diagnostics) = _solve_one_group(
            e[:, members], w[:, members], tol, max_iter, init_max_iter, warm)
        x[:, members] = xg
        prices[group] = lam
        mu[members] = mug
        residuals[index] = diagnostics["kkt_residual"]
        priced[group] = bool(np.any(lam > 0))
        iterations, init_iterations = max(iterations, its), max(init_iterations, init_its)
        outer_iterations = max(outer_iterations, outer)
    return GroupedSolution(x, prices, mu, iterations, init_iterations, outer_iterations, residuals, priced)


def solve_groups(e, w, groups: np.ndarray, num_groups: int, method: str, tol, max_iter, init_max_iter,
                 warm_multipliers: Optional[np.ndarray]) -> GroupedSolution:
    """Dispatch: every group in one batched solve."""
    return solve_groups_one_by_one(e, w, groups, num_groups, tol, max_iter, init_max_iter, warm_multipliers)
