"""What the learners need to know about a spatial world (docs/design.md section 13).

In a world of W x H regions (`EconomyConfig.spatial`) every learner emits `Actions.move`, [N] int64 in
[0, NUM_MOVES): 0 stay, 1 north (y - 1), 2 south (y + 1), 3 west (x - 1), 4 east (x + 1); a move off the
edge stays. The own features (`Observation.self_features`) then end with the own region's coordinates
[x / (W - 1 or 1), y / (H - 1 or 1)] and its last market prices [R] (after the private signals' columns).
Outside a spatial world nothing here changes a learner: no move, no extra column.
"""
from __future__ import annotations

import torch

from homoecon_env.config import NUM_MOVES, EconomyConfig

MOVE_OFFSETS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dx, dy) of each move, in the action's order
__all__ = ["MOVE_OFFSETS", "NUM_MOVES", "self_dims", "region_columns", "destinations"]


def self_dims(config: EconomyConfig) -> int:
    """Columns a spatial world appends to the own features: 2 coordinates and the R last prices (0 otherwise)."""
    return 2 + config.num_resources if config.spatial else 0


def region_columns(config: EconomyConfig, self_dim: int) -> tuple[slice, slice]:
    """(coordinates [2], own region's last prices [R]) as column slices of own features of width `self_dim`."""
    r = config.num_resources
    return slice(self_dim - r - 2, self_dim - r), slice(self_dim - r, self_dim)


def destinations(config: EconomyConfig) -> torch.Tensor:
    """[G, NUM_MOVES] int64: the region each move leads to from each region (a move off the edge stays)."""
    w, h = config.world_width, config.world_height
    x, y = torch.arange(w * h) % w, torch.arange(w * h) // w
    dx = torch.tensor([dx for dx, _ in MOVE_OFFSETS])
    dy = torch.tensor([dy for _, dy in MOVE_OFFSETS])
    to_x, to_y = x[:, None] + dx, y[:, None] + dy  # [G, 5]
    inside = (to_x >= 0) & (to_x < w) & (to_y >= 0) & (to_y < h)
    return torch.where(inside, to_y * w + to_x, (y * w + x)[:, None])
