"""Observations (docs/design.md section 3): own features, K peers' public features, peer mask.

`self` row layout (S = 2R + 2 + B + D + 2J):
    holdings [R] | age / max_age [1] | last effort [1] | utility weights [R] | last broadcast [B] |
    id vector [D] | season sin [J] | season cos [J]
`peers` row layout (P = B + D + R): last broadcast [B] | id vector [D] | holdings [R]

In the symbolic broadcast mode (docs/design.md section 11) the message columns hold the one-hot of
the L tokens over the V symbols, token by token ([L * V] in the place of [B], so B reads L * V above:
`EconomyConfig.message_width`): column l * V + v is 1 when token l is symbol v. A newborn's (and every
founder's, before its first step) message columns are all 0, which no sent message is.

With `private_signals` (docs/design.md section 11) `self` ends with the boom one-hot [J] (scouts only,
zeros for the others), and each `peers` row has the peer's last-job one-hot [J] between the id vector and
the holdings (holdings stay the last R columns; `core.signals`).

In a spatial world (`EconomyConfig.spatial`, docs/design.md section 13) `self` ends (after the private
signals' columns, if any) with 2 + R more: the own region's x / (W - 1 or 1) and y / (H - 1 or 1), in
[0, 1], and its last market prices [R] (sum 1; all zeros when the region held no market last step).
Peers are then drawn among the live agents of the regions within `peer_radius` (Chebyshev) of the own
(`core.space.sample_regional_peers`); slots beyond a smaller pool are padded (index -1, mask 0, zeros).
The `peers` row layout is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core import signals
from homoecon_env.core import space as space_module
from homoecon_env.core.production import JobTable, season_features
from homoecon_env.core.state import EconomyState


@dataclass(frozen=True)
class Observation:
    """Batched observation of every slot (torch tensors). N slots, K peer slots.

    The economy builds it with `Observation.lazy`: ``peers`` [N, K, P] (1.5 GB at a million agents
    and K = 32) is then gathered from the public table [N, P] on its first read, so code that never
    reads it (a bare rollout) does not pay for it; the values are those an eager gather gives.
    ``Observation(self_features, peers, peer_mask, peer_index)`` and `dataclasses.replace` work as
    for any dataclass (replace reads, and so gathers, ``peers``).
    """

    self_features: torch.Tensor  # [N, S] float32
    peers: torch.Tensor  # [N, K, P] float32, zeros in empty slots
    peer_mask: torch.Tensor  # [N, K] float32, 1 where the slot holds a live peer
    peer_index: torch.Tensor  # [N, K] int64, the row each peer slot shows (-1: empty)

    @classmethod
    def lazy(cls, self_features: torch.Tensor, public: torch.Tensor, rows: torch.Tensor, live: Optional[torch.Tensor],
             peer_mask: torch.Tensor, peer_index: torch.Tensor) -> "Observation":
        """An Observation whose ``peers`` is ``public[rows] * live[..., None]`` (``public`` [N, P], ``rows``
        [N, K] valid rows, ``live`` [N, K] bool or None: all live), gathered on the first read."""
        observation = cls(self_features, None, peer_mask, peer_index)
        object.__delattr__(observation, "peers")  # the first read goes to __getattr__
        object.__setattr__(observation, "_peer_source", (public, rows, live))
        return observation

    def __getattr__(self, name: str):
        """Only reached for ``peers`` of a lazy observation not read yet (and for missing names)."""
        source = self.__dict__.get("_peer_source") if name == "peers" else None
        if source is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        peers = gather_peers(*source)
        object.__setattr__(self, "peers", peers)
        object.__delattr__(self, "_peer_source")
        return peers


def gather_peers(public: torch.Tensor, rows: torch.Tensor, live: Optional[torch.Tensor]) -> torch.Tensor:
    """[N, K, P] ``public[rows]``, times ``live[..., None]`` (bool) when given: a torch gather, which uses
    every intra-op thread (the same values as NumPy's ``take``, and the same signed zeros)."""
    n, k = rows.shape
    peers = public.index_select(0, rows.reshape(-1)).reshape(n, k, public.shape[1])
    return peers if live is None else peers.mul_(live.unsqueeze(-1))


def self_features(state: EconomyState, jobs: JobTable, config: EconomyConfig, space=None) -> np.ndarray:
    """[N, S] float32 own features of every slot (the layout in the module docstring); NumPy state.
    ``space`` (`core.space.SpaceTable`) is required when ``config.spatial``."""
    columns = (state.holdings, (state.ages / config.max_age)[:, None], state.effort[:, None], state.utility_weights,
               state.broadcast, state.id_vectors, season_features(jobs, state.step)[None, :])  # the season: every row
    if config.private_signals:
        columns += (signals.self_columns(state, config),)
    if config.spatial:
        columns += (space_module.self_columns(state, space, config.num_resources),)
    features = np.empty((state.num_slots, sum(column.shape[1] for column in columns)), dtype=np.float32)
    start = 0
    for column in columns:
        features[:, start:start + column.shape[1]] = column
        start += column.shape[1]
    return features


def public_features(state: EconomyState, config: Optional[EconomyConfig] = None) -> np.ndarray:
    """[N, P] float32, what peers see of an agent: last broadcast, id vector, holdings; NumPy state.
    With private signals the last-job one-hot [J] goes before the holdings (holdings stay last)."""
    if config is not None and config.private_signals:
        return np.concatenate([state.broadcast, state.id_vectors, signals.public_columns(state, config),
                               state.holdings], axis=1, dtype=np.float32)
    return np.concatenate([state.broadcast, state.id_vectors, state.holdings], axis=1, dtype=np.float32)


def everyone_else(num_slots: int, num_peer_slots: int) -> torch.Tensor:
    """[N, K] int64: the first K other rows in slot order; slots beyond the N - 1 others hold -1."""
    columns = torch.arange(num_slots - 1)[None, :]  # [1, N - 1]
    others = columns + (columns >= torch.arange(num_slots)[:, None]).long()
    if num_peer_slots <= num_slots - 1:
        return others[:, :num_peer_slots]
    return torch.cat([others, torch.full((num_slots, num_peer_slots - (num_slots - 1)), -1, dtype=torch.long)], dim=1)


def sample_peers(num_slots: int, num_peer_slots: int, generator: torch.Generator) -> torch.Tensor:
    """[N, K] a fresh uniform sample of K distinct other rows per row, in random order.

    Small populations use a random permutation per row; large ones draw offsets 1..N-1 from each row's
    own index and redraw duplicates (a few rounds, each over the rows that held one).
    """
    n, k = num_slots, num_peer_slots
    if 2 * k > n - 1:
        order = torch.rand(n, n - 1, generator=generator).argsort(dim=1)[:, :k]
        return everyone_else(n, n - 1).gather(1, order)
    # The [N, K] buffer comes from NumPy, which asks the kernel for huge pages (torch's allocator does
    # not: at a million agents its 256 MB cost 65,000 page faults, more than the draws themselves).
    offsets = torch.randint(1, n, (n, k), generator=generator, out=torch.from_numpy(np.empty((n, k), np.int64)))
    # Each round redraws, in row-major order, the later copy (in sort order) of every repeated offset.
    # Only rows with a repeat are sorted by torch (a row's sort does not depend on the other rows);
    # NumPy's sort of the values finds them (several times faster), and a row redrawn in a round is
    # the only kind that can hold a repeat in the next.
    rows = _rows_with_repeats(offsets.numpy(), n)
    while rows.numel():
        chosen = offsets.index_select(0, rows)
        ordered, where = chosen.sort(dim=1)
        repeated = ordered[:, 1:] == ordered[:, :-1]  # [M, K-1]
        duplicate = torch.zeros(chosen.shape, dtype=torch.bool).scatter_(1, where[:, 1:], repeated)
        chosen[duplicate] = torch.randint(1, n, (int(duplicate.sum()),), generator=generator)
        offsets.index_copy_(0, rows, chosen)
        rows = rows[duplicate.any(dim=1)]
    # (row + offset) mod n, as row + offset < 2n: in place, in NumPy (torch's broadcast ops here stall for tens
    # of ms on two threads when the other core is busy), in blocks of rows whose temporaries stay in cache
    shown, rows = offsets.numpy(), np.arange(n)[:, None]
    for start in range(0, n, PEER_BLOCK):
        block = shown[start:start + PEER_BLOCK]
        block += rows[start:start + PEER_BLOCK]
        block -= n * (block >= n)
    return offsets


PEER_BLOCK = 4096  # rows of [N, K] peer offsets per in-place pass


def _rows_with_repeats(offsets: np.ndarray, n: int) -> torch.Tensor:
    """[M] int64, in increasing order, the rows of ``offsets`` [N, K] (values in [1, n)) holding a value twice."""
    k = offsets.shape[1]
    values = np.sort(offsets.astype(np.int32) if n <= np.iinfo(np.int32).max else offsets, axis=1).reshape(-1)
    equal = np.flatnonzero(values[1:] == values[:-1])  # neighbours in the flat sorted rows...
    return torch.from_numpy(np.unique(equal[equal % k != k - 1] // k))  # ...of one row


def observe(state: EconomyState, peer_index: np.ndarray, jobs: JobTable, config: EconomyConfig,
            all_valid: bool = False, space=None, owned: bool = False) -> Observation:
    """The batched observation (torch) of a NumPy state for the peer assignment [N, K].

    ``all_valid``: the caller knows every entry of ``peer_index`` is a row (no -1 padding); then,
    while every slot is alive (all but the final step), no peer needs masking. ``owned``: the caller
    hands ``peer_index`` over (a fresh sample nobody else holds), so the observation keeps it uncopied.
    """
    public = public_features(state, config)
    if all_valid and state.alive.all():
        rows, live = peer_index, None
        mask, shown = np.ones(peer_index.shape, dtype=np.float32), peer_index if owned else peer_index.copy()
    else:
        rows = np.maximum(peer_index, 0)
        live = (peer_index >= 0) & state.alive[rows]
        mask, shown = live.astype(np.float32), np.where(live, peer_index, -1)
    own = self_features(state, jobs, config, space)
    tensor = torch.from_numpy
    return Observation.lazy(tensor(own), tensor(public), tensor(rows), None if live is None else tensor(live),
                            tensor(mask), tensor(shown))
