"""EconomyState: the whole economy as arrays with one row per agent slot.

A slot is a row. When an agent dies its slot is taken by a newborn in the same step, so the
number of rows is constant; ``agent_ids`` says which agent (``agent_<k>``) holds each row.

`Economy.state` holds torch tensors. The stage functions compute on the NumPy views of
`as_numpy()` (zero-copy): at the sizes economies run, a NumPy call costs a third of a torch call,
and a step is a few hundred such calls. Random draws still come from the economy's torch generator.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from homoecon_env.config import EconomyConfig

DTYPE = torch.float64  # economy state is float64 so that trade conserves goods to 1e-9
NO_PARENT = -1


@dataclass(frozen=True)
class EconomyState:
    """Arrays of the economy between two steps. N slots, R resources, B broadcast dim, D id dim.

    Torch tensors in `Economy.state`; NumPy arrays (the same memory) inside the stage functions.
    """

    holdings: torch.Tensor  # [N, R] float64, goods held (after decay)
    ages: torch.Tensor  # [N] int64, steps lived
    utility_weights: torch.Tensor  # [N, R] float64, heritable tastes on the simplex
    id_vectors: torch.Tensor  # [N, D] float64 in [-1, 1], a public random identity
    broadcast: torch.Tensor  # [N, B] float64 in [-1, 1], last message (seen by peers next step); symbolic
    #   mode: [N, L * V] the one-hot of its L tokens (all zeros: no message yet)
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
    boom: int = -1  # the job in boom at the next production (private_signals, docs/design.md section 11); -1: none
    # Space (docs/design.md section 13). Always set by the core (a 1x1 world: region all 0, one price row);
    # None only in a state built by hand without them.
    region: Optional[torch.Tensor] = None  # [N] int64, region g = y * world_width + x of each slot
    region_prices: Optional[torch.Tensor] = None  # [G, R] float64, each region's last market prices (rows sum
    #   to 1; NaN for a region where nobody traded); before the first step 1/R where someone lives
    lineage: Optional[torch.Tensor] = None  # [N] int64, spatial worlds only (None otherwise): the agent id of
    #   the founder at the root of the slot's first-parent line (a founder's own id); territory control

    @property
    def num_slots(self) -> int:
        return self.holdings.shape[0]

    def replace(self, **changes) -> "EconomyState":
        return dataclasses.replace(self, **changes)

    def as_numpy(self) -> "EconomyState":
        """The same state with NumPy arrays sharing the tensors' memory."""
        return EconomyState(**{name: _maybe(getattr(self, name), torch.Tensor.numpy) for name in ARRAY_FIELDS},
                            step=self.step, next_id=self.next_id, boom=self.boom)

    def as_torch(self) -> "EconomyState":
        """The same state with torch tensors sharing the arrays' memory."""
        return EconomyState(**{name: _maybe(getattr(self, name), torch.from_numpy) for name in ARRAY_FIELDS},
                            step=self.step, next_id=self.next_id, boom=self.boom)


def _maybe(value, convert):
    """``convert(value)``, or None for a field left None (region fields of a hand-built state)."""
    return None if value is None else convert(value)


ARRAY_FIELDS = tuple(f.name for f in dataclasses.fields(EconomyState) if f.name not in ("step", "next_id", "boom"))


def uniform(generator: torch.Generator, *shape: int) -> np.ndarray:
    """Float64 draws uniform on [0, 1) from the economy's torch generator, as a NumPy array."""
    return torch.rand(*shape, generator=generator, dtype=DTYPE).numpy()


def normal(generator: torch.Generator, *shape: int) -> np.ndarray:
    """Float64 standard normal draws from the economy's torch generator, as a NumPy array."""
    return torch.randn(*shape, generator=generator, dtype=DTYPE).numpy()


def random_tastes(count: int, num_resources: int, heterogeneous: bool, generator: torch.Generator,
                  scale=None) -> np.ndarray:
    """Utility weights [count, R] on the simplex: Dirichlet(1) (normalised exponentials) or uniform.

    ``scale`` [R] (EconomyConfig.taste_scale; None: all ones) multiplies the exponentials before they are
    normalised, and is the homogeneous tastes itself (normalised). The same draws either way."""
    if not heterogeneous:
        if scale is None:
            return np.full((count, num_resources), 1.0 / num_resources)
        scale = np.asarray(scale, dtype=np.float64)
        return np.tile(scale / scale.sum(), (count, 1))
    exponential = -np.log1p(-uniform(generator, count, num_resources))
    if scale is not None:
        exponential = exponential * np.asarray(scale, dtype=np.float64)
    return exponential / exponential.sum(axis=1, keepdims=True)


def random_ids(count: int, id_dim: int, generator: torch.Generator) -> np.ndarray:
    """Identity vectors [count, D], uniform on [-1, 1]."""
    return uniform(generator, count, id_dim) * 2 - 1


def random_holdings(count: int, config: EconomyConfig, generator: torch.Generator) -> np.ndarray:
    """Endowments [count, R], uniform on [0, 2 * initial_holdings]."""
    return uniform(generator, count, config.num_resources) * (2 * config.initial_holdings)


def random_regions(count: int, config: EconomyConfig, generator: torch.Generator) -> np.ndarray:
    """[count] int64 regions uniform over the G regions: a torch draw only in a spatial world, so that the
    default economy's random stream is untouched (all 0 otherwise)."""
    if not config.spatial:
        return np.zeros(count, dtype=np.int64)
    return torch.randint(0, config.num_regions, (count,), generator=generator).numpy()


def opening_prices(region: np.ndarray, config: EconomyConfig) -> np.ndarray:
    """[G, R] the region prices before any market: 1/R in a region where someone lives, NaN elsewhere."""
    prices = np.full((config.num_regions, config.num_resources), np.nan)
    prices[np.unique(region)] = 1.0 / config.num_resources
    return prices


def initial_state(config: EconomyConfig, generator: torch.Generator) -> EconomyState:
    """The founding population (NumPy arrays): random endowments, tastes and ids; ages spread over
    [0, max_age); in a spatial world, regions uniform over the grid (a draw after all the others)."""
    n = config.num_agents
    state = EconomyState(
        holdings=random_holdings(n, config, generator),
        ages=torch.randint(0, config.max_age, (n,), generator=generator).numpy(),
        utility_weights=random_tastes(n, config.num_resources, config.heterogeneous_tastes, generator,
                                      config.taste_scale),
        id_vectors=random_ids(n, config.id_dim, generator),
        broadcast=np.zeros((n, config.message_width)),
        effort=np.zeros(n),
        job=np.full(n, -1, dtype=np.int64),
        lifetime_reward=np.zeros(n),
        generation=np.zeros(n, dtype=np.int64),
        agent_ids=np.arange(n, dtype=np.int64),
        parent_ids=np.full((n, 2), NO_PARENT, dtype=np.int64),
        parent_slots=np.full((n, 2), NO_PARENT, dtype=np.int64),
        alive=np.ones(n, dtype=bool),
        step=0,
        next_id=n,
    )
    region = random_regions(n, config, generator)
    lineage = np.arange(n, dtype=np.int64) if config.spatial else None
    return state.replace(region=region, region_prices=opening_prices(region, config), lineage=lineage)
