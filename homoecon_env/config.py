"""EconomyConfig: every parameter of the economy, frozen and validated (docs/design.md section 2).

This module is the only home of defaults. The defaults reproduce the seed's setting: 50 agents,
two resources (berries, meat), gathering (berries, phase pi/2) and hunting (meat, phase 0).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from homoecon_env.validation import SEED_MAX, check_float, check_int, check_vector

# Bounds on fields that would otherwise overflow to inf or nan (docs/design.md section 7), each far
# beyond any sensible economy:
MAX_GOODS = 1e6  # initial_holdings, a job's output per unit of effort, rest_bonus: the market is
#   verified on holdings from 1e-9 to 1e6 (docs/design.md section 4), and holdings must stay inside
#   float32 (3.4e38) in observations; 1e39 of output per step would overflow at once.
MAX_MUTATION = 5.0  # sigma of the log-normal taste mutation: exp(5 z) stays below 1e20 for every
#   float64 normal draw (|z| < 9), while mutation=300 overflows exp() and gives nan tastes; beyond 5 a
#   child's tastes are a random corner of the simplex whatever its parents', so nothing is lost.
BROADCAST_MODES = ("continuous", "symbolic")  # docs/design.md section 11
MAX_MESSAGE_WIDTH = 4096  # L * V, the one-hot columns a symbolic message takes in every peer row
MAX_STEP_COUNT = 2**53  # max_age, max_steps: every count up to 2**53 is exact in float64
MAX_REGIONS = 1_000_000  # W * H: a region's price row and counts are dense [G, ...] arrays
NUM_MOVES = 5  # the move action (docs/design.md section 13): 0 stay, 1 north, 2 south, 3 west, 4 east


@dataclass(frozen=True)
class Job:
    """One job: what a unit of effort produces at the peak of its season, and what it consumes.

    Output per step = effort * output * cos^2(pi/2 * t / period + phase) * lognormal noise.
    ``inputs`` make supply chains: a unit of effort uses ``inputs`` from the worker's holdings,
    and effort is capped by what the worker holds. ``yield_noise=None`` takes the economy's.
    """

    name: str
    output: tuple[float, ...]
    inputs: Optional[tuple[float, ...]] = None  # None: needs nothing
    phase: float = 0.0  # radians
    period: float = 100.0  # steps, >= 1
    yield_noise: Optional[float] = None  # sigma of the log-yield; None: EconomyConfig.yield_noise


def _default_jobs() -> tuple[Job, ...]:
    return (
        Job("gathering", output=(1.0, 0.0), phase=math.pi / 2),
        Job("hunting", output=(0.0, 1.0), phase=0.0),
    )


@dataclass(frozen=True)
class EconomyConfig:
    """All parameters of one economy. Invalid values raise ``ValueError`` naming the field and range."""

    num_agents: int = 50  # population size, constant between steps
    resources: tuple[str, ...] = ("berries", "meat")
    jobs: tuple[Job, ...] = field(default_factory=_default_jobs)
    broadcast_dim: int = 6  # length B of a message (continuous mode; unused in symbolic mode)
    broadcast_mode: str = "continuous"  # "continuous": B floats in [-1, 1]; "symbolic": L tokens of V symbols
    vocab_size: int = 4  # V, symbols per token (symbolic mode only), >= 2
    message_length: int = 2  # L, tokens per message (symbolic mode only), >= 1
    id_dim: int = 4  # length of each agent's random identity vector, in [-1, 1]
    max_age: int = 10  # steps; an agent dies when age >= max_age
    decay_rate: float = 0.1  # fraction of leftover holdings lost per step
    rest_bonus: float = 0.005  # reward per unit of effort not spent
    age_effort_penalty: float = 0.05  # effort cap (1 - age/max_age) ** age_effort_penalty
    need: tuple[float, ...] = (1.0, 1.0)  # starvation when need . consumed < min_consumption
    min_consumption: float = 0.01
    max_consume: float = 0.9  # cap on each consumed fraction of post-trade holdings
    mutation: float = 0.1  # in [0, 5], sigma of the log-normal mutation of a child's utility weights
    yield_noise: float = 0.1  # sigma of the lognormal yield noise (mean 1); 0 = deterministic
    parent_share: float = 0.2  # fraction of its holdings each parent gives a child
    initial_holdings: float = 1.0  # in [0, 1e6], mean of each resource at reset (uniform on [0, 2 * mean])
    heterogeneous_tastes: bool = True  # False: every agent has uniform utility weights, never mutated
    taste_scale: Optional[tuple[float, ...]] = None  # [R] >= 0, each good's weight in founders' tastes; None: alike
    #   Each founder's weights are Exp(1) draws times taste_scale, normalised (homogeneous tastes: taste_scale
    #   normalised); a 0 means no founder values that good. None draws the seed's Dirichlet(1).
    max_steps: int = 1000  # episode length; every live agent is truncated at this step
    num_peers: Optional[int] = None  # K peers observed; None: everyone else (num_agents - 1)
    seed: Optional[int] = 0  # in [0, 2**64 - 1]; the first reset() without a seed uses it (None: OS entropy)
    # Private signals, the positive control (docs/design.md section 11; off by default, and then nothing
    # below is used): one job at a time is in boom; scouts see which, the others only through peers.
    private_signals: bool = False  # True: booms, scouts, and the extra observation columns of section 11
    boom_multiplier: float = 3.0  # in [0, 1e6], the boom job's output factor
    boom_switch: float = 0.1  # in [0, 1], chance per step that the boom moves to another job (uniformly)
    scout_fraction: float = 0.25  # in [0, 1]; scouts are the agents whose id_vectors[:, 0] > 1 - 2 * scout_fraction
    # Space (docs/design.md section 13; the defaults are one region, section 2 exactly): a W x H grid of
    # regions, region g = y * W + x, each with its own yields, seasons and market; the `move` action.
    world_width: int = 1  # W >= 1, columns of regions
    world_height: int = 1  # H >= 1, rows of regions
    resource_map: Optional[tuple[tuple[float, ...], ...]] = None  # [G][J] >= 0, yield multiplier of each job in
    #   each region (row g = y * W + x); None: all 1
    region_phase_shift: float = 0.0  # radians per column: region (x, y)'s seasons are shifted by this * x
    migration_cost: float = 0.0  # in [0, 1], fraction of each of its holdings a mover loses (destroyed)
    peer_radius: int = 0  # >= 0, peers come from regions within this Chebyshev distance (0: own region)
    carrying_capacity: float = 0.0  # >= 0; 0 = off, else output per worker of a job in a region is scaled by
    #   min(1, carrying_capacity / workers on that job there)

    def __post_init__(self):
        check_int("num_agents", self.num_agents, 1)
        check_int("broadcast_dim", self.broadcast_dim, 1)
        if self.broadcast_mode not in BROADCAST_MODES:
            raise ValueError(f"broadcast_mode must be one of {list(BROADCAST_MODES)}, got {self.broadcast_mode!r}")
        check_int("vocab_size", self.vocab_size, 2, MAX_MESSAGE_WIDTH)
        check_int("message_length", self.message_length, 1, MAX_MESSAGE_WIDTH)
        if self.symbolic and self.vocab_size * self.message_length > MAX_MESSAGE_WIDTH:
            raise ValueError(f"vocab_size * message_length must be <= {MAX_MESSAGE_WIDTH} (the one-hot width peers "
                             f"see), got {self.vocab_size} * {self.message_length}")
        check_int("id_dim", self.id_dim, 1)
        # Step counts up to 2**53: float64 holds every such count exactly (age / max_age, t / period).
        check_int("max_age", self.max_age, 1, MAX_STEP_COUNT)
        check_int("max_steps", self.max_steps, 1, MAX_STEP_COUNT)
        if self.num_peers is not None:
            check_int("num_peers", self.num_peers, 1)
        if self.seed is not None:  # a Python int, as config.json stores it; torch.Generator's range
            check_int("seed", self.seed, 0, SEED_MAX)
        for name, lo, hi in (
            ("decay_rate", 0.0, 1.0), ("max_consume", 0.0, 1.0), ("parent_share", 0.0, 0.5),
            ("mutation", 0.0, MAX_MUTATION), ("initial_holdings", 0.0, MAX_GOODS), ("rest_bonus", 0.0, MAX_GOODS),
        ):
            check_float(name, getattr(self, name), lo, hi)
        for name in ("age_effort_penalty", "min_consumption", "yield_noise"):
            check_float(name, getattr(self, name), 0.0, math.inf)
        if not isinstance(self.heterogeneous_tastes, bool):
            raise ValueError(f"heterogeneous_tastes must be a bool, got {self.heterogeneous_tastes!r}")
        if not isinstance(self.private_signals, bool):
            raise ValueError(f"private_signals must be a bool, got {self.private_signals!r}")
        for name, lo, hi in (("boom_multiplier", 0.0, MAX_GOODS), ("boom_switch", 0.0, 1.0),
                             ("scout_fraction", 0.0, 1.0)):
            check_float(name, getattr(self, name), lo, hi)
        if not isinstance(self.resources, tuple) or not self.resources or \
                not all(isinstance(r, str) and r for r in self.resources) or \
                len(set(self.resources)) != len(self.resources):
            raise ValueError(f"resources must be a non-empty tuple of distinct names, got {self.resources!r}")
        num_resources = len(self.resources)
        check_vector("need", self.need, num_resources)
        if self.taste_scale is not None:
            check_vector("taste_scale", self.taste_scale, num_resources)
            if not sum(self.taste_scale) > 0:
                raise ValueError(f"taste_scale must have a positive entry (some good must be valued), "
                                 f"got {self.taste_scale!r}")
        if not isinstance(self.jobs, tuple) or not self.jobs:
            raise ValueError(f"jobs must be a non-empty tuple of Job, got {self.jobs!r}")
        names = [getattr(job, "name", None) for job in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"jobs must have distinct names, got {names}")
        for job in self.jobs:
            if not isinstance(job, Job):
                raise ValueError(f"jobs must hold Job objects, got {type(job).__name__}")
            check_vector(f"jobs[{job.name}].output", job.output, num_resources, high=MAX_GOODS)
            if job.inputs is not None:
                check_vector(f"jobs[{job.name}].inputs", job.inputs, num_resources)
            # A season sampled once per step: a period below one step only aliases a longer one, and
            # a tiny one (1e-300) sends the season angle pi/2 * t / period to inf (nan features).
            check_float(f"jobs[{job.name}].period", job.period, 1.0, math.inf)
            check_float(f"jobs[{job.name}].phase", job.phase, -math.inf, math.inf)
            if job.yield_noise is not None:
                check_float(f"jobs[{job.name}].yield_noise", job.yield_noise, 0.0, math.inf)
        self._check_space()
        if self.private_signals and len(self.jobs) < 2:
            raise ValueError(f"private_signals needs at least 2 jobs (a boom moves between jobs), got {len(self.jobs)}")

    def _check_space(self) -> None:
        """Validate the space fields (docs/design.md section 13); JSON's nested lists become tuples."""
        check_int("world_width", self.world_width, 1, MAX_REGIONS)
        check_int("world_height", self.world_height, 1, MAX_REGIONS)
        if self.world_width * self.world_height > MAX_REGIONS:
            raise ValueError(f"world_width * world_height must be <= {MAX_REGIONS} regions, "
                             f"got {self.world_width} * {self.world_height}")
        check_float("region_phase_shift", self.region_phase_shift, -math.inf, math.inf)
        check_float("migration_cost", self.migration_cost, 0.0, 1.0)
        check_int("peer_radius", self.peer_radius, 0)
        check_float("carrying_capacity", self.carrying_capacity, 0.0, math.inf)
        if self.resource_map is None:
            return
        regions, jobs = self.world_width * self.world_height, len(self.jobs)
        expected = (f"resource_map must be None or {regions} rows (one per region g = y * world_width + x) of "
                    f"{jobs} finite numbers in [0, {MAX_GOODS:g}] (one per job)")
        rows = self.resource_map
        if not isinstance(rows, (tuple, list)) or len(rows) != regions:
            length = len(rows) if isinstance(rows, (tuple, list)) else type(rows).__name__
            raise ValueError(f"{expected}, got {length} rows")
        for g, row in enumerate(rows):
            try:
                check_vector(f"resource_map[{g}]", row, jobs, high=MAX_GOODS, what="one per job")
            except ValueError as error:
                raise ValueError(f"{error}; {expected}") from None
        object.__setattr__(self, "resource_map", tuple(tuple(float(v) for v in row) for row in rows))

    # -- derived sizes ------------------------------------------------------------------
    @property
    def num_regions(self) -> int:
        """G = world_width * world_height (docs/design.md section 13)."""
        return self.world_width * self.world_height

    @property
    def spatial(self) -> bool:
        """True when space changes anything: more than one region, or a carrying capacity. Then the `move`
        action is required and the observation carries the region (docs/design.md section 13)."""
        return self.num_regions > 1 or self.carrying_capacity > 0

    @property
    def num_resources(self) -> int:
        return len(self.resources)

    @property
    def num_jobs(self) -> int:
        return len(self.jobs)

    @property
    def symbolic(self) -> bool:
        """True in the symbolic broadcast mode (docs/design.md section 11)."""
        return self.broadcast_mode == "symbolic"

    @property
    def message_width(self) -> int:
        """Columns a message takes in an observation: B (continuous), or L * V (symbolic: the one-hot of
        each of the L tokens over the V symbols, position by position)."""
        return self.message_length * self.vocab_size if self.symbolic else self.broadcast_dim

    @property
    def peers_observed(self) -> int:
        """K, the number of peer slots in an observation."""
        return self.num_peers if self.num_peers is not None else max(self.num_agents - 1, 1)

    @property
    def samples_peers(self) -> bool:
        """True when each step draws a fresh uniform sample of K peers (K < num_agents - 1)."""
        return self.peers_observed < self.num_agents - 1

    @property
    def max_population_names(self) -> int:
        """Upper bound on the names an episode can produce: the founders plus one birth per death."""
        return self.num_agents * (1 + self.max_steps)

    def replace(self, **overrides) -> "EconomyConfig":
        """A copy with some fields changed; unknown names raise ``ValueError`` naming them."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown EconomyConfig field(s) {unknown}; "
                             f"known: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)

