"""EconomyState: the whole economy as tensors with one row per agent slot.

A slot is a row. When an agent dies its slot is taken by a newborn in the same step, so the
number of rows is constant; ``agent_ids`` says which agent (``agent_<k>``) holds each row.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from homoecon_env.config import EconomyConfig

DTYPE = torch.float64  # economy state is float64 so that trade conserves goods to 1e-9
NO_PARENT = -1


@dataclass(frozen=True)
class EconomyState:
    """Tensors of the economy between two steps. N slots, R resources, B broadcast dim, D id dim."""

    holdings: torch.Tensor  # [N, R] float64, goods held (after decay)
    ages: torch.Tensor  # [N] int64, steps lived
    utility_weights: torch.Tensor  # [N, R] float64, heritable tastes on the simplex
    id_vectors: torch.Tensor  # [N, D] float64 in [-1, 1], a public random identity
    broadcast: torch.Tensor  # [N, B] float64 in [-1, 1], last message (seen by peers next step)
    effort: torch.Tensor  # [N] float64 in [0, 1], effort actually spent last step
    job: torch.Tensor  # [N] int64, last job chosen (-1 before the first step)
    lifetime_reward: torch.Tensor  # [N] float64, sum of rewards since birth (fitness)
    generation: torch.Tensor  # [N] int64, 0 for founders
    agent_ids: torch.Tensor  # [N] int64, k of agent_<k> occupying the slot
    parent_ids: torch.Tensor  # [N, 2] int64, agent ids of the parents (-1: founder)
    parent_slots: torch.Tensor  # [N, 2] int64, rows the parents held at the birth (-1: founder)
    alive: torch.Tensor  # [N] bool; False only for slots emptied on the final step
    step: int  # steps completed in this episode
    next_id: int  # the k the next newborn gets

    @property
    def num_slots(self) -> int:
        return self.holdings.shape[0]

    def replace(self, **changes) -> "EconomyState":
        return dataclasses.replace(self, **changes)


def random_tastes(count: int, num_resources: int, heterogeneous: bool, generator: torch.Generator) -> torch.Tensor:
    """Utility weights [count, R] on the simplex: Dirichlet(1) (normalised exponentials) or uniform."""
    if not heterogeneous:
        return torch.full((count, num_resources), 1.0 / num_resources, dtype=DTYPE)
    exponential = -torch.log1p(-torch.rand(count, num_resources, generator=generator, dtype=DTYPE))
    return exponential / exponential.sum(dim=1, keepdim=True)


def random_ids(count: int, id_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Identity vectors [count, D], uniform on [-1, 1]."""
    return torch.rand(count, id_dim, generator=generator, dtype=DTYPE) * 2 - 1


def random_holdings(count: int, config: EconomyConfig, generator: torch.Generator) -> torch.Tensor:
    """Endowments [count, R], uniform on [0, 2 * initial_holdings]."""
    return torch.rand(count, config.num_resources, generator=generator, dtype=DTYPE) * (2 * config.initial_holdings)


def initial_state(config: EconomyConfig, generator: torch.Generator) -> EconomyState:
    """The founding population: random endowments, tastes and ids; ages spread over [0, max_age)."""
    n = config.num_agents
    return EconomyState(
        holdings=random_holdings(n, config, generator),
        ages=torch.randint(0, config.max_age, (n,), generator=generator),
        utility_weights=random_tastes(n, config.num_resources, config.heterogeneous_tastes, generator),
        id_vectors=random_ids(n, config.id_dim, generator),
        broadcast=torch.zeros(n, config.broadcast_dim, dtype=DTYPE),
        effort=torch.zeros(n, dtype=DTYPE),
        job=torch.full((n,), -1, dtype=torch.long),
        lifetime_reward=torch.zeros(n, dtype=DTYPE),
        generation=torch.zeros(n, dtype=torch.long),
        agent_ids=torch.arange(n),
        parent_ids=torch.full((n, 2), NO_PARENT, dtype=torch.long),
        parent_slots=torch.full((n, 2), NO_PARENT, dtype=torch.long),
        alive=torch.ones(n, dtype=torch.bool),
        step=0,
        next_id=n,
    )
