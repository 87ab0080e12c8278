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
from typing import NamedTuple, Optional

import numpy as np
import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core import signals
from homoecon_env.core import space as space_module
from homoecon_env.core.production import JobTable, season_features
from homoecon_env.core.state import EconomyState
from homoecon_env.core.threads import run_blocks


@dataclass(frozen=True)
class Observation:
    """Batched observation of every slot (torch tensors). N slots, K peer slots.

    The economy builds it with `Observation.lazy`: ``peers`` [N, K, P] (1.5 GB at a million agents
    and K = 32) is then gathered from the public table [N, P] on its first read, so code that never
    reads it (a bare rollout) does not pay for it; the values are those an eager gather gives.
    ``Observation(self_features, peers, peer_mask, peer_index)`` and `dataclasses.replace` work as
    for any dataclass (replace reads, and so gathers, ``peers``).

    `peer_source` says where a lazy observation's ``peers`` come from (the public table [N, P] and the rows
    shown), gathered or not: a learner can keep that table instead of the [N, K, P] peers. An eager
    observation (built from a ready ``peers`` tensor, or by `dataclasses.replace`) has none.
    """

    self_features: torch.Tensor  # [N, S] float32
    peers: torch.Tensor  # [N, K, P] float32, zeros in empty slots
    peer_mask: torch.Tensor  # [N, K] float32, 1 where the slot holds a live peer
    peer_index: torch.Tensor  # [N, K] int64, the row each peer slot shows (-1: empty)

    @classmethod
    def lazy(cls, self_features: torch.Tensor, public: torch.Tensor, rows: torch.Tensor, live: Optional[torch.Tensor],
             peer_mask: Optional[torch.Tensor], peer_index: torch.Tensor) -> "Observation":
        """An Observation whose ``peers`` is ``public[rows] * live[..., None]`` (``public`` [N, P], ``rows``
        [N, K] valid rows, ``live`` [N, K] bool or None: all live), gathered on the first read.
        ``peer_mask`` None: every slot holds a live peer, and the mask (ones [N, K], 128 MB at a million
        agents and K = 32) is made on its first read."""
        observation = cls(self_features, None, peer_mask, peer_index)
        object.__delattr__(observation, "peers")  # the first read goes to __getattr__
        object.__setattr__(observation, "_peer_source", PeerSource(public, rows, live))
        if peer_mask is None:
            object.__delattr__(observation, "peer_mask")
            object.__setattr__(observation, "_mask_shape", tuple(rows.shape))
        return observation

    def __getattr__(self, name: str):
        """Only reached for ``peers`` or ``peer_mask`` of a lazy observation not read yet (and for missing names)."""
        if name == "peers" and "_peer_source" in self.__dict__:
            value = gather_peers(*self.__dict__["_peer_source"])  # (the source stays: `peer_source`)
        elif name == "peer_mask" and "_mask_shape" in self.__dict__:
            value = torch.ones(self.__dict__["_mask_shape"], dtype=torch.float32)
            object.__delattr__(self, "_mask_shape")
        else:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        object.__setattr__(self, name, value)
        return value

    @property
    def peer_source(self) -> Optional["PeerSource"]:
        """Where ``peers`` come from: `PeerSource` (``peers`` is ``source.gather()``, to the bit) for an
        observation made by `Observation.lazy`, whether ``peers`` was read yet or not; None for an eager one (and
        for a lazy one pickled after ``peers`` was read: it unpickles eager)."""
        source = self.__dict__.get("_peer_source")
        return None if source is None else PeerSource(*source)  # (a plain tuple in a pickle of older code)

    def __getstate__(self) -> dict:
        """What pickling keeps: the fields, and a lazy observation's source only while ``peers`` is unread (the
        same state as before the source outlived the first read)."""
        state = dict(self.__dict__)
        if "peers" in state:
            state.pop("_peer_source", None)
        return state


class PeerSource(NamedTuple):
    """A lazy observation's peers as rows of one table: ``peers[i, k] = public[rows[i, k]]`` where ``live[i, k]``
    (or everywhere when ``live`` is None), and ``public[rows[i, k]] * 0`` elsewhere (zeros, signed as the row's
    values: -0.0 under a negative value; NaN under a non-finite one). ``peer_index`` equals ``rows`` where live
    and -1 elsewhere, ``peer_mask`` is ``live`` as 0/1 floats. Tensors on the CPU."""

    public: torch.Tensor  # [M, P] float32 what each row shows (M = N for an economy's observation)
    rows: torch.Tensor  # [N, K] int64, the row each peer slot gathers, in [0, M) (also where not live)
    live: Optional[torch.Tensor]  # [N, K] bool, False where the slot is empty or its peer dead; None: all live

    def gather(self) -> torch.Tensor:
        """[N, K, P] the peers (`gather_peers`): a new tensor."""
        return gather_peers(self.public, self.rows, self.live)


def gather_peers(public: torch.Tensor, rows: torch.Tensor, live: Optional[torch.Tensor]) -> torch.Tensor:
    """[N, K, P] ``public[rows]``, times ``live[..., None]`` (bool) when given: a torch gather, which uses
    every intra-op thread (the same values as NumPy's ``take``, and the same signed zeros)."""
    n, k = rows.shape
    peers = public.index_select(0, rows.reshape(-1)).reshape(n, k, public.shape[1])
    return peers if live is None else peers.mul_(live.unsqueeze(-1))


def self_features(state: EconomyState, jobs: JobTable, config: EconomyConfig, space=None, pool=None) -> np.ndarray:
    """[N, S] float32 own features of every slot (the layout in the module docstring); NumPy state.
    ``space`` (`core.space.SpaceTable`) is required when ``config.spatial``; ``pool``: a
    `core.threads.BlockPool` whose threads fill the blocks of rows (None: this thread)."""
    season = season_features(jobs, state.step)[None, :]  # the same for every row
    columns = (state.holdings, None, state.effort[:, None], state.utility_weights, state.broadcast,
               state.id_vectors, season)  # None: age / max_age, computed per block
    if config.private_signals:
        columns += (signals.self_columns(state, config),)
    if config.spatial:
        columns += (space_module.self_columns(state, space, config.num_resources),)
    widths = [1 if column is None else column.shape[1] for column in columns]
    n = state.num_slots
    features = np.empty((n, sum(widths)), dtype=np.float32)
    # In blocks of rows, every column of a block in turn: the block's rows stay in cache (one pass over
    # the [N, S] result, not one per column); each value is the same elementwise cast as a whole-column copy.
    def fill(firsts):
        for first in firsts:
            last = min(first + FEATURE_BLOCK, n)
            out, start = features[first:last], 0
            for column, width in zip(columns, widths):
                if column is None:
                    out[:, start] = state.ages[first:last] / config.max_age
                else:
                    out[:, start:start + width] = column if column is season else column[first:last]
                start += width

    run_blocks(pool, fill, range(0, n, FEATURE_BLOCK))
    return features


FEATURE_BLOCK = 8192  # rows of own features filled per pass


def public_features(state: EconomyState, config: Optional[EconomyConfig] = None, pool=None) -> np.ndarray:
    """[N, P] float32, what peers see of an agent: last broadcast, id vector, holdings; NumPy state.
    With private signals the last-job one-hot [J] goes before the holdings (holdings stay last).
    ``pool``: a `core.threads.BlockPool`; when it gives more than one thread, its threads fill blocks of
    rows (the same elementwise casts as one concatenate)."""
    columns = [state.broadcast, state.id_vectors, state.holdings]
    if config is not None and config.private_signals:
        columns.insert(2, signals.public_columns(state, config))
    n = state.num_slots
    firsts = range(0, n, FEATURE_BLOCK)
    if pool is None or pool.thread_count(len(firsts)) == 1:
        return np.concatenate(columns, axis=1, dtype=np.float32)
    public = np.empty((n, sum(column.shape[1] for column in columns)), dtype=np.float32)

    def fill(starts):
        for first in starts:
            rows = slice(first, min(first + FEATURE_BLOCK, n))
            np.concatenate([column[rows] for column in columns], axis=1, out=public[rows], casting="same_kind")

    run_blocks(pool, fill, firsts)
    return public


def everyone_else(num_slots: int, num_peer_slots: int) -> torch.Tensor:
    """[N, K] int64: the first K other rows in slot order; slots beyond the N - 1 others hold -1."""
    columns = torch.arange(num_slots - 1)[None, :]  # [1, N - 1]
    others = columns + (columns >= torch.arange(num_slots)[:, None]).long()
    if num_peer_slots <= num_slots - 1:
        return others[:, :num_peer_slots]
    return torch.cat([others, torch.full((num_slots, num_peer_slots - (num_slots - 1)), -1, dtype=torch.long)], dim=1)


def sample_peers(num_slots: int, num_peer_slots: int, generator: torch.Generator, pool=None) -> torch.Tensor:
    """[N, K] a fresh uniform sample of K distinct other rows per row, in random order (``pool``: a
    `core.threads.BlockPool` whose threads run the pass over the offsets; the same draws without).

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
    # One pass over blocks of rows whose temporaries stay in cache finds the rows holding a repeated offset
    # (NumPy's sort of a copy of the block's values, several times faster than torch's), keeps those rows'
    # offsets aside, and turns every offset into the row it shows, (row + offset) mod n, in place.
    shown = offsets.numpy()
    repeats, kept = _offsets_to_rows(shown, n, pool)
    if repeats.size:
        chosen = torch.from_numpy(kept)
        _redraw_repeats(chosen, n, generator)
        shown[repeats] = (repeats[:, None] + chosen.numpy()) % n
    return offsets


PEER_BLOCK = 4096  # rows of [N, K] peer offsets per in-place pass


def _offsets_to_rows(offsets: np.ndarray, n: int, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """Find the rows of ``offsets`` [N, K] (values in [1, n)) holding a value twice, and turn every entry into
    the row it shows, (row + offset) mod n, in place. Returns (those rows [M] int64 in increasing order, a
    copy [M, K] of their offsets as drawn). One pass in blocks of rows, into scratch buffers that stay in cache
    (one set per thread of ``pool``, each thread taking a run of consecutive blocks)."""
    total, k = offsets.shape
    rows = min(total, PEER_BLOCK)
    row_of = np.repeat(np.arange(rows, dtype=np.int64), k).reshape(rows, k)  # each entry's row in the block

    def convert(starts):
        ordered = np.empty((rows, k), dtype=np.int32 if n <= np.iinfo(np.int32).max else np.int64)
        equal = np.empty((rows, max(k - 1, 0)), dtype=bool)
        shifted = np.empty((rows, k), dtype=np.uint64)
        found, kept = [], []
        for start in starts:
            block = offsets[start:start + PEER_BLOCK]
            size = block.shape[0]
            sorted_block = ordered[:size]
            np.copyto(sorted_block, block, casting="unsafe")  # values < n fit
            sorted_block.sort(axis=1)
            same = np.equal(sorted_block[:, 1:], sorted_block[:, :-1], out=equal[:size])
            hits = np.flatnonzero(same)
            if hits.size:
                repeated = np.unique(hits // (k - 1))
                found.append(repeated + start)
                kept.append(block[repeated])
            block += row_of[:size]
            block += start  # now row + offset, in [1, 2n - 1)
            # (row + offset) mod n: as unsigned, row + offset - n wraps past every value unless it is the smaller
            wide, less = block.view(np.uint64), shifted[:size]
            np.subtract(wide, np.uint64(n), out=less)
            np.minimum(wide, less, out=wide)
        return found, kept

    found, kept = [], []
    for run_found, run_kept in run_blocks(pool, convert, range(0, total, PEER_BLOCK)):  # runs in row order
        found += run_found
        kept += run_kept
    if not found:
        return np.empty(0, dtype=np.int64), np.empty((0, k), dtype=np.int64)
    return np.concatenate(found), np.concatenate(kept)


def _redraw_repeats(chosen: torch.Tensor, n: int, generator: torch.Generator) -> None:
    """Redraw in place, until none is left, the repeated offsets of ``chosen`` [M, K] (rows of the sample
    that hold one, in row order). Each round redraws, in row-major order, the later copy (in sort order)
    of every repeated offset; only a row redrawn in a round can hold a repeat in the next (a row's sort
    does not depend on the other rows, so the rows without repeats need no sort)."""
    active = torch.arange(chosen.shape[0])
    while active.numel():
        rows = chosen.index_select(0, active)
        ordered, where = rows.sort(dim=1)
        repeated = ordered[:, 1:] == ordered[:, :-1]  # [A, K-1]
        duplicate = torch.zeros(rows.shape, dtype=torch.bool).scatter_(1, where[:, 1:], repeated)
        rows[duplicate] = torch.randint(1, n, (int(duplicate.sum()),), generator=generator)
        chosen.index_copy_(0, active, rows)
        active = active[duplicate.any(dim=1)]


def observe(state: EconomyState, peer_index: np.ndarray, jobs: JobTable, config: EconomyConfig,
            all_valid: bool = False, space=None, owned: bool = False, pool=None) -> Observation:
    """The batched observation (torch) of a NumPy state for the peer assignment [N, K].

    ``all_valid``: the caller knows every entry of ``peer_index`` is a row (no -1 padding); then,
    while every slot is alive (all but the final step), no peer needs masking. ``owned``: the caller
    hands ``peer_index`` over (a fresh sample nobody else holds), so the observation keeps it uncopied.
    ``pool``: a `core.threads.BlockPool` whose threads fill the own and public features (None: this thread).
    """
    public = public_features(state, config, pool)
    if all_valid and state.alive.all():
        rows, live = peer_index, None
        mask, shown = None, peer_index if owned else peer_index.copy()  # mask: ones, made on first read
    else:
        rows = np.maximum(peer_index, 0)
        live = (peer_index >= 0) & state.alive[rows]
        mask, shown = live.astype(np.float32), np.where(live, peer_index, -1)
    own = self_features(state, jobs, config, space, pool)
    tensor = torch.from_numpy
    return Observation.lazy(tensor(own), tensor(public), tensor(rows), None if live is None else tensor(live),
                            None if mask is None else tensor(mask), tensor(shown))
