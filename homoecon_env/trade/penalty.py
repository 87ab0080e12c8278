"""penalty: the seed's method, kept for comparison: fixed-size projected gradient steps on
welfare minus a quadratic penalty on IR violations, with no repair."""

from __future__ import annotations

import numpy as np

from .market import _utility, project_onto_conservation

PENALTY_STEPS = 100  # the seed's number of steps (penalty's default max_iter)
PENALTY_STEP_SIZE = 0.1  # the seed's fixed gradient step
PENALTY_WEIGHT = 10.0  # the seed's quadratic IR-penalty coefficient


def _solve_penalty(e, w, steps):
    """Fixed-step projected gradient ascent on welfare minus a quadratic IR penalty (no repair)."""
    supply = e.sum(axis=1)
    endowment_utility = _utility(w, e)
    x = e.copy()
    for _ in range(steps):
        shortfall = np.maximum(endowment_utility - _utility(w, x), 0.0)  # [N]
        gradient = w / (1.0 + x) * (1.0 + PENALTY_WEIGHT * shortfall)[None, :]
        x = project_onto_conservation(x + PENALTY_STEP_SIZE * gradient, supply)
    mu = PENALTY_WEIGHT * np.maximum(endowment_utility - _utility(w, x), 0.0)
    # Price estimate: the holding-weighted mean marginal value of each good.
    held = x.sum(axis=1)
    marginal_value = ((1.0 + mu)[None, :] * w / (1.0 + x) * x).sum(axis=1)
    lam = np.where(held > 0, marginal_value / np.where(held > 0, held, 1.0), 0.0)
    return x, lam, mu, steps
