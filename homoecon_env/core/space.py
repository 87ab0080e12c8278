"""Space (docs/design.md section 13): a W x H grid of regions, migration, regional yields, crowding, local peers.

Used only when ``config.spatial`` (more than one region, or a carrying capacity); a 1x1 world without
one never calls into this module, so the default economy is section 2 exactly. Region g = y * W + x.
Everything is batched over agents (bincount, gathers, one batched searchsorted); loops run only over
the (2 * peer_radius + 1) ** 2 neighbour offsets when tables are built, never over agents or regions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from homoecon_env.config import EconomyConfig

# The move action: 0 stay, 1 north (y - 1), 2 south (y + 1), 3 west (x - 1), 4 east (x + 1).
MOVE_DX = np.array([0, 0, 0, -1, 1], dtype=np.int64)
MOVE_DY = np.array([0, -1, 1, 0, 0], dtype=np.int64)
MOVE_NAMES = ("stay", "north", "south", "west", "east")


@dataclass(frozen=True)
class SpaceTable:
    """The world of a config as arrays. G regions, J jobs."""

    width: int
    height: int
    x: np.ndarray  # [G] int64 column of each region
    y: np.ndarray  # [G] int64 row of each region
    resource_map: np.ndarray  # [G, J] yield multipliers
    phase_offset: np.ndarray  # [G] radians added to every job's season angle in the region
    carrying_capacity: float  # 0 = off
    neighbours: np.ndarray  # [G, M] regions within peer_radius (Chebyshev), -1 off the grid; M = (2r + 1) ** 2

    @classmethod
    def from_config(cls, config: EconomyConfig) -> "SpaceTable":
        w, h, g, j = config.world_width, config.world_height, config.num_regions, config.num_jobs
        regions = np.arange(g, dtype=np.int64)
        x, y = regions % w, regions // w
        resource_map = np.ones((g, j)) if config.resource_map is None else np.array(config.resource_map, dtype=float)
        r = min(config.peer_radius, max(w, h) - 1)  # a larger radius sees no further
        offsets = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
        columns = []
        for dx, dy in offsets:  # (2r + 1) ** 2 table columns, each over all regions at once
            nx, ny = x + dx, y + dy
            inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
            columns.append(np.where(inside, ny * w + nx, -1))
        return cls(w, h, x, y, resource_map, config.region_phase_shift * x.astype(np.float64),
                   float(config.carrying_capacity), np.stack(columns, axis=1))

    @property
    def num_regions(self) -> int:
        return self.x.shape[0]


def moved_regions(region: np.ndarray, move: np.ndarray, space: SpaceTable) -> np.ndarray:
    """[N] int64 region of each slot after its move; a move off the edge of the grid stays."""
    x, y = space.x[region] + MOVE_DX[move], space.y[region] + MOVE_DY[move]
    inside = (x >= 0) & (x < space.width) & (y >= 0) & (y < space.height)
    return np.where(inside, y * space.width + x, region)


def migrate(holdings: np.ndarray, region: np.ndarray, move: np.ndarray, space: SpaceTable, migration_cost: float):
    """Apply the moves: (holdings [N, R], region [N], moved [N] bool, lost [R]).

    A mover (a slot whose region changes; a move off the edge is no move) loses ``migration_cost`` of each
    of its holdings, destroyed: ``lost`` is their sum, the ledger's ``migration_lost``."""
    new_region = moved_regions(region, move, space)
    moved = new_region != region
    if migration_cost > 0 and moved.any():
        paid = holdings * (migration_cost * moved)[:, None]  # [N, R], zero rows for those who stay
        return holdings - paid, new_region, moved, paid.sum(axis=0)
    return holdings, new_region, moved, np.zeros(holdings.shape[1])


def season_by_region(period: np.ndarray, phase: np.ndarray, step: int, space: SpaceTable) -> np.ndarray:
    """[G, J] cos^2 of each job's season angle in each region: pi/2 * t / period + phase + the region's shift."""
    angle = (math.pi / 2) * step / period[None, :] + phase[None, :] + space.phase_offset[:, None]
    return np.cos(angle) ** 2


def crowding_factor(region: np.ndarray, job: np.ndarray, working: np.ndarray, num_jobs: int,
                    space: SpaceTable) -> np.ndarray:
    """[N] min(1, capacity / workers on the row's job in its region); 1 everywhere when capacity is off.

    Workers are the slots that spent effort > 0 on that job in that region this step."""
    if space.carrying_capacity <= 0:
        return np.ones(region.shape[0])
    cell = region * num_jobs + job  # [N] (region, job) cell
    workers = np.bincount(cell, weights=working.astype(np.float64), minlength=space.num_regions * num_jobs)
    factor = np.minimum(1.0, space.carrying_capacity / np.maximum(workers, 1.0))
    return factor[cell]


def region_population(region: np.ndarray, alive: np.ndarray, num_regions: int) -> np.ndarray:
    """[G] int64 live agents in each region."""
    return np.bincount(region[alive], minlength=num_regions).astype(np.int64)


def region_control(region: np.ndarray, lineage: np.ndarray, alive: np.ndarray, num_regions: int):
    """Who controls each region: ([G] int64 founder id of the lineage with the most live members there,
    -1 where nobody lives; [G] float64 that lineage's share of the region's population, 0 where empty).
    Ties go to the lowest founder id. One lexsort over the live agents, no loop."""
    control, share = np.full(num_regions, -1, dtype=np.int64), np.zeros(num_regions)
    if not alive.any():
        return control, share
    pairs = np.stack([region[alive], lineage[alive]], axis=1)
    groups, counts = np.unique(pairs, axis=0, return_counts=True)  # rows (region, lineage), sorted
    order = np.lexsort((groups[:, 1], -counts, groups[:, 0]))  # by region, then most members, then lowest id
    groups, counts = groups[order], counts[order]
    first = np.ones(len(groups), dtype=bool)
    first[1:] = groups[1:, 0] != groups[:-1, 0]
    population = np.bincount(region[alive], minlength=num_regions)
    control[groups[first, 0]] = groups[first, 1]
    share[groups[first, 0]] = counts[first] / population[groups[first, 0]]
    return control, share


def self_columns(state, space: SpaceTable, num_resources: int) -> np.ndarray:
    """[N, 2 + R] the own region's coordinates x / (W - 1 or 1), y / (H - 1 or 1) in [0, 1] and its last
    prices (all zeros for a region that held no market last step: its row is NaN in the state)."""
    x = space.x[state.region] / max(space.width - 1, 1)
    y = space.y[state.region] / max(space.height - 1, 1)
    prices = np.nan_to_num(state.region_prices[state.region], nan=0.0)  # [N, R]
    return np.concatenate([x[:, None], y[:, None], prices], axis=1)


def sample_regional_peers(region: np.ndarray, alive: np.ndarray, num_peer_slots: int, space: SpaceTable,
                          generator: torch.Generator) -> np.ndarray:
    """[N, K] int64 peers of each row among the live agents (itself excluded) of the regions within
    peer_radius of its own; -1 pads a row whose pool holds fewer than K.

    A row whose pool holds at most K takes all of it (in region order, then slot order: no draw); a
    larger pool gives a uniform sample of K distinct agents in random order. Batched: live slots are
    sorted by region, so each region is a block; a row's pool is the concatenation of its neighbour
    regions' blocks, indexed by one batched searchsorted over per-row cumulative counts.
    """
    n, k, g = region.shape[0], num_peer_slots, space.num_regions
    key = np.where(alive, region, g)  # the dead sort after every region
    order = np.argsort(key, kind="stable")  # [N] slots grouped by region
    counts = np.bincount(region[alive], minlength=g)  # [G]
    starts = np.cumsum(counts) - counts  # [G] first position of each region's block in `order`
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.append(starts, starts[-1] + counts[-1])[key[order]]  # position in own block
    neighbours = space.neighbours  # [G, M]
    block_counts = np.where(neighbours >= 0, counts[np.maximum(neighbours, 0)], 0)  # [G, M]
    block_starts = starts[np.maximum(neighbours, 0)]  # [G, M]
    cum = np.cumsum(block_counts, axis=1)  # [G, M] inclusive
    own_column = neighbours.shape[1] // 2  # offset (0, 0) sits in the middle of the table
    own_before = (cum - block_counts)[:, own_column]  # [G] pool entries before the own region's block
    pool = cum[region, -1] - alive  # [N] pool size, self excluded
    self_at = np.where(alive, own_before[region] + rank, np.iinfo(np.int64).max)  # [N] own index in the pool

    # Virtual indices into the pool [N, K] (-1: empty slot).
    index = np.broadcast_to(np.arange(k), (n, k)).copy()
    index[index >= pool[:, None]] = -1
    sampled = np.flatnonzero(pool > k)
    if sampled.size:
        index[sampled] = _distinct_draws(pool[sampled], k, generator)
    valid = index >= 0
    u = np.where(valid, index, 0)
    u = u + (u >= self_at[:, None])  # skip the row's own entry
    rows_cum = torch.from_numpy(np.ascontiguousarray(cum[region]))  # [N, M]
    column = torch.searchsorted(rows_cum, torch.from_numpy(u), right=True).numpy()  # [N, K] block of each
    column = np.minimum(column, neighbours.shape[1] - 1)
    reg = region[:, None]
    within = u - (cum[reg, column] - block_counts[reg, column])
    position = block_starts[reg, column] + within
    peers = order[np.clip(position, 0, n - 1)]
    return np.where(valid, peers, -1)


def _distinct_draws(pool: np.ndarray, k: int, generator: torch.Generator) -> np.ndarray:
    """[S, K] K distinct uniform integers in [0, pool_s) per row (pool_s > K), in random order.

    Pools up to 2K: the K smallest of random keys over [0, 2K) (invalid columns keyed +inf); larger
    pools: uniform draws with duplicates redrawn (each round is one op over all rows, and few rounds
    are needed when at most half of a pool can be taken)."""
    result = np.empty((pool.shape[0], k), dtype=np.int64)
    small = pool <= 2 * k
    if small.any():
        rows = np.flatnonzero(small)
        keys = torch.rand(rows.size, 2 * k, generator=generator, dtype=torch.float64)
        keys[torch.from_numpy(np.arange(2 * k)[None, :] >= pool[rows, None])] = math.inf
        result[rows] = keys.argsort(dim=1)[:, :k].numpy()
    if not small.all():
        rows = np.flatnonzero(~small)
        size = pool[rows].astype(np.float64)[:, None]  # [S, 1]
        draws = (torch.rand(rows.size, k, generator=generator, dtype=torch.float64).numpy() * size).astype(np.int64)
        check = np.arange(rows.size)  # rows that may hold a duplicate: all at first, then only redrawn ones
        while check.size:
            sub = draws[check]
            where = np.argsort(sub, axis=1, kind="stable")
            ordered = np.take_along_axis(sub, where, axis=1)
            repeated = ordered[:, 1:] == ordered[:, :-1]  # [C, K - 1]: the later copy of a value
            has = repeated.any(axis=1)
            if not has.any():
                break
            duplicate = np.zeros(sub.shape, dtype=bool)
            np.put_along_axis(duplicate, where[:, 1:], repeated, axis=1)
            redraw = torch.rand(int(duplicate.sum()), generator=generator, dtype=torch.float64).numpy()
            sub[duplicate] = (redraw * np.broadcast_to(size[check], sub.shape)[duplicate]).astype(np.int64)
            draws[check] = sub
            check = check[has]
        result[rows] = draws
    return result
