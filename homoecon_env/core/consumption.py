"""Consumption, reward, decay and ageing (docs/design.md section 2, stages 5 and 6)."""
from __future__ import annotations

import numpy as np

from homoecon_env.config import EconomyConfig


def consume(holdings, consume_fraction, utility_weights, effort_spent, config: EconomyConfig):
    """Eat a fraction of post-trade holdings.

    holdings [N, R] after trade, consume_fraction [N, R] in [0, 1] (capped at max_consume),
    utility_weights [N, R], effort_spent [N]. Returns (consumed [N, R], left [N, R], reward [N]) with
    reward = prod_r (1 + c_r) ** w_r - 1 + rest_bonus * (1 - effort_spent).
    """
    consumed = holdings * np.minimum(consume_fraction, config.max_consume)
    left = holdings - consumed
    utility = np.exp((utility_weights * np.log1p(consumed)).sum(axis=1)) - 1.0
    reward = utility + config.rest_bonus * (1.0 - effort_spent)
    return consumed, left, reward


def decay_and_age(left, ages, config: EconomyConfig):
    """Leftovers lose decay_rate; everyone ages by one step. Returns (holdings [N, R], ages [N])."""
    return left * (1.0 - config.decay_rate), ages + 1
