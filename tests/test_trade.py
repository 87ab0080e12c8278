"""Tests of the market-clearing stage (DESIGN.md section 4); cvxpy is the oracle."""
import numpy as np
import pytest
import torch

from homoecon_env.trade import TradeResult, clear_market


def random_instance(rng, num_agents, num_goods, scale=1.0):
    holdings = rng.exponential(1.0, (num_agents, num_goods)) * rng.uniform(0, 3, (num_agents, 1)) * scale
    weights = rng.dirichlet(np.ones(num_goods), num_agents)
    return torch.tensor(holdings), torch.tensor(weights)


def test_trade_conserves_each_resource_and_keeps_everyone_individually_rational():
    rng = np.random.default_rng(0)
    for _ in range(20):
        holdings, weights = random_instance(rng, int(rng.integers(1, 40)), int(rng.integers(1, 5)))
        result = clear_market(holdings, weights)
        assert isinstance(result, TradeResult)
        assert result.allocation.dtype == torch.float64
        assert torch.allclose(result.allocation.sum(0), holdings.sum(0), rtol=1e-12, atol=1e-12)
        assert result.conservation_error <= 1e-9
        assert result.ir_violation <= 1e-7
        assert (result.allocation >= 0).all()
