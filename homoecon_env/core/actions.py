"""Batched actions and their checks (docs/design.md section 3): one row per agent slot.

Refused input raises ``ValueError`` naming the agent (the occupant of the first bad row), the key,
the value and what is allowed, e.g. ``agent_7: action 'effort' is nan (got [nan]); expected
finite values in [0.0, 1.0]``. Finite values outside a Box are clipped. Only real numbers are
actions: bools, complex numbers, text and other objects are refused rather than cast (NumPy
would silently read True as 1.0, drop an imaginary part or parse "0.5").
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from homoecon_env.config import NUM_MOVES, EconomyConfig
from homoecon_env.core.threads import run_blocks

ACTION_BOUNDS = {"broadcast": (-1.0, 1.0), "effort": (0.0, 1.0), "trade_weights": (0.0, 1.0), "consume": (0.0, 1.0)}
REAL_KINDS = frozenset("fiu")  # NumPy dtype kinds taken as numbers: float, signed and unsigned int


@dataclass(frozen=True)
class Actions:
    """Batched actions, one row per slot (docs/design.md section 3): torch tensors or NumPy arrays."""

    broadcast: torch.Tensor  # [N, B] in [-1, 1]; symbolic mode: [N, L] int64 tokens in [0, V)
    job: torch.Tensor  # [N] int64 in [0, J)
    effort: torch.Tensor  # [N] in [0, 1]
    trade_weights: torch.Tensor  # [N, R] in [0, 1], normalised by the env; all zeros = uniform
    consume: torch.Tensor  # [N, R] in [0, 1]
    move: Optional[torch.Tensor] = None  # [N] int64 in [0, 5): 0 stay, 1 north (y-1), 2 south (y+1), 3 west (x-1),
    #   4 east (x+1); a move off the edge stays. Required when config.spatial, ignored otherwise


def kind_name(array: np.ndarray) -> str:
    """What a refused array holds, for a message: e.g. "complex numbers of dtype complex128"."""
    names = {"b": "bools", "c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects"}
    if array.dtype.kind == "O" and holds_bool(array):
        what = "bools among numbers"
    else:
        what = names.get(array.dtype.kind, "values")
    return f"{what} of dtype {array.dtype}"


def holds_bool(value) -> bool:
    """True when a list-like ``value`` (not an array) holds a bool, which NumPy would cast to 0.0/1.0."""
    try:
        items = np.asarray(value, dtype=object).ravel()
    except (TypeError, ValueError):
        return False
    return any(isinstance(item, (bool, np.bool_)) for item in items)


def as_array(value, key: str) -> np.ndarray:
    """A NumPy view (or copy) of a torch tensor or array-like action ``key``, its dtype as given.

    Tensors are detached (an action that still carries a graph is just its values) and moved to
    the CPU; bfloat16 is widened to float64 (NumPy has no bfloat16). A list holding a bool comes
    back as an object array, so that it is refused instead of read as a number.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.double() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"action '{key}': cannot convert {type(value).__name__} to an array ({error})") from None
    if array.dtype.kind in REAL_KINDS and holds_bool(value):
        return np.asarray(value, dtype=object)
    return array


def token_one_hot(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """[N, L * V] float64: the one-hot of each of the L tokens [N, L] (ints in [0, V)), position by
    position (columns l * V .. l * V + V - 1 belong to token l). What peers see of a symbolic message."""
    n, length = tokens.shape
    one_hot = np.zeros((n, length, vocab_size))
    np.put_along_axis(one_hot, np.asarray(tokens, dtype=np.int64)[..., None], 1.0, axis=2)
    return one_hot.reshape(n, length * vocab_size)


CHECK_BLOCK = 8192  # rows of the [N, B + 1 + 2R] action matrix per finiteness check and clip


class ActionChecker:
    """Checks and clips batched actions for one config. The common case (real arrays of the right
    shapes, all finite, jobs in range) costs a few array calls: the float keys are checked and
    clipped as one [N, B + 1 + 2R] matrix. In the symbolic broadcast mode the broadcast is L integer
    tokens per row, checked like the job (`checked_tokens`), and the matrix is [N, 1 + 2R]."""

    def __init__(self, config: EconomyConfig):
        self.symbolic, self.vocab_size, self.message_length = config.symbolic, config.vocab_size, config.message_length
        self.spatial = config.spatial
        if self.symbolic:
            self._init_symbolic(config)
            return
        b, r = config.broadcast_dim, config.num_resources
        bounds = [ACTION_BOUNDS["broadcast"]] * b + [ACTION_BOUNDS["effort"]] \
            + [ACTION_BOUNDS["trade_weights"]] * r + [ACTION_BOUNDS["consume"]] * r
        self.low, self.high = np.array(bounds, dtype=np.float64).T.copy()  # [B + 1 + 2R] each
        self.widths = (("broadcast", b), ("effort", 0), ("trade_weights", r), ("consume", r))  # 0: a scalar per row
        self.num_jobs, self.broadcast_dim, self.num_resources = config.num_jobs, b, r

    def check(self, actions: Actions, agent_ids: np.ndarray, pool=None) -> Actions:
        """``actions`` as fresh NumPy arrays (float64, job int64), clipped into their Boxes.
        ``agent_ids`` [N] name the rows in messages. Raises ValueError; changes nothing. ``pool``: a
        `core.threads.BlockPool` whose threads check and clip blocks of rows (None: this thread)."""
        n = agent_ids.shape[0]
        columns = []
        for key, width in self.widths:
            value = as_array(getattr(actions, key), key)
            shape = (n, width) if width else (n,)
            if value.shape != shape:
                raise ValueError(f"action '{key}' has shape {value.shape}, expected {shape} (one row per slot)")
            if value.dtype.kind not in REAL_KINDS:
                refuse(agent_ids, non_real_rows(value), key, f"not numeric ({kind_name(value)})", value)
            columns.append(value.reshape(n, -1))
        joined = np.concatenate(columns, axis=1, dtype=np.float64)  # [N, B + 1 + 2R]

        def check_and_clip(starts) -> bool:  # in blocks of rows that stay in cache: check, then clip in place
            for start in starts:
                block = joined[start:start + CHECK_BLOCK]
                if not np.isfinite(block).all():
                    return False
                np.minimum(np.maximum(block, self.low, out=block), self.high, out=block)
            return True

        if not all(run_blocks(pool, check_and_clip, range(0, n, CHECK_BLOCK))):
            for (key, _), value in zip(self.widths, columns):
                bad = ~np.isfinite(value.astype(np.float64)).all(axis=1)
                nan = bad.any() and np.isnan(value[np.flatnonzero(bad)[0]].astype(np.float64)).any()
                refuse(agent_ids, bad, key, "nan" if nan else "not finite", value)
            np.minimum(np.maximum(joined, self.low, out=joined), self.high, out=joined)  # (clipping is idempotent)
        job = self.checked_job(as_array(actions.job, "job"), agent_ids)
        b, r = self.broadcast_dim, self.num_resources
        broadcast = self.checked_tokens(as_array(actions.broadcast, "broadcast"), agent_ids) if self.symbolic \
            else joined[:, :b]
        move = self.checked_move(actions.move, agent_ids)
        return Actions(broadcast, job, joined[:, b], joined[:, b + 1:b + 1 + r], joined[:, b + 1 + r:], move)

    def _init_symbolic(self, config: EconomyConfig) -> None:
        """The float matrix without the broadcast: [N, 1 + 2R] (effort, trade weights, consume)."""
        r = config.num_resources
        bounds = [ACTION_BOUNDS["effort"]] + [ACTION_BOUNDS["trade_weights"]] * r + [ACTION_BOUNDS["consume"]] * r
        self.low, self.high = np.array(bounds, dtype=np.float64).T.copy()  # [1 + 2R] each
        self.widths = (("effort", 0), ("trade_weights", r), ("consume", r))
        self.num_jobs, self.broadcast_dim, self.num_resources = config.num_jobs, 0, r

    def checked_tokens(self, tokens: np.ndarray, agent_ids: np.ndarray) -> np.ndarray:
        """[N, L] int64 tokens: integers (or whole floats) in [0, V), the job's rules per token."""
        n, length, vocab = agent_ids.shape[0], self.message_length, self.vocab_size
        expected = f"{length} int token(s) in [0, {vocab})"
        if tokens.shape != (n, length):
            raise ValueError(f"action 'broadcast' has shape {tokens.shape}, expected {(n, length)} "
                             f"(one row of {length} token(s) per slot)")
        integral = tokens.dtype.kind in "iu"
        if integral and (n == 0 or (tokens.min() >= 0 and tokens.max() < vocab)):  # the common case ends here
            return tokens.astype(np.int64)
        if tokens.dtype.kind == "O":
            whole = np.array([all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                                  for v in row) for row in tokens], dtype=bool)
            refuse(agent_ids, ~whole, "broadcast", "not an int", tokens, expected)
            refuse(agent_ids, np.array([not all(0 <= v < vocab for v in row) for row in tokens], dtype=bool),
                   "broadcast", "out of range", tokens, expected)
            return tokens.astype(np.int64)
        if tokens.dtype.kind not in "iuf":
            refuse(agent_ids, np.ones(n, dtype=bool), "broadcast", f"not an int ({kind_name(tokens)})", tokens,
                   expected)
        if not integral:
            with np.errstate(invalid="ignore"):
                refuse(agent_ids, (~np.isfinite(tokens) | (tokens != np.round(tokens))).any(axis=1), "broadcast",
                       "not an int", tokens, expected)
        refuse(agent_ids, ((tokens < 0) | (tokens >= vocab)).any(axis=1), "broadcast", "out of range", tokens,
               expected)
        return tokens.astype(np.int64)

    def checked_job(self, job: np.ndarray, agent_ids: np.ndarray) -> np.ndarray:
        """[N] int64 jobs: integers (or whole floats) in [0, J)."""
        return checked_choice(job, "job", self.num_jobs, agent_ids)

    def checked_move(self, move, agent_ids: np.ndarray) -> Optional[np.ndarray]:
        """[N] int64 moves in [0, 5) when the world is spatial (required then); None otherwise (ignored)."""
        if not self.spatial:
            return None
        if move is None:
            raise ValueError(f"action 'move' is missing: it is required when the world is spatial (an int in "
                             f"[0, {NUM_MOVES}) per slot: 0 stay, 1 north, 2 south, 3 west, 4 east)")
        return checked_choice(as_array(move, "move"), "move", NUM_MOVES, agent_ids)


def checked_choice(value: np.ndarray, key: str, count: int, agent_ids: np.ndarray) -> np.ndarray:
    """[N] int64 choices of action ``key`` (job, move): integers (or whole floats) in [0, count)."""
    n = agent_ids.shape[0]
    expected = f"an int in [0, {count})"
    if value.shape != (n,):
        raise ValueError(f"action '{key}' has shape {value.shape}, expected {(n,)} (one row per slot)")
    integral = value.dtype.kind in "iu"
    if integral and (n == 0 or (value.min() >= 0 and value.max() < count)):  # the common case ends here
        return value.astype(np.int64)
    if value.dtype.kind == "O":  # e.g. Python ints past 2**64: name the row that holds one
        whole = np.array([isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in value])
        refuse(agent_ids, ~whole, key, "not an int", value, expected)
        refuse(agent_ids, np.array([not 0 <= v < count for v in value]), key, "out of range", value, expected)
    if value.dtype.kind not in "iuf":
        refuse(agent_ids, np.ones(n, dtype=bool), key, f"not an int ({kind_name(value)})", value, expected)
    if not integral:
        with np.errstate(invalid="ignore"):
            refuse(agent_ids, ~np.isfinite(value) | (value != np.round(value)), key, "not an int", value, expected)
    refuse(agent_ids, (value < 0) | (value >= count), key, "out of range", value, expected)
    return value.astype(np.int64)


def non_real_rows(value: np.ndarray) -> np.ndarray:
    """[N] bool: the rows of a refused array that hold something other than a real number (every
    row when the whole dtype is not real, e.g. complex or text)."""
    if value.dtype.kind != "O":
        return np.ones(value.shape[0], dtype=bool)

    def real(item) -> bool:
        return isinstance(item, numbers.Real) and not isinstance(item, (bool, np.bool_))

    return np.array([not all(real(item) for item in np.ravel(row)) for row in value], dtype=bool)


def refuse(agent_ids: np.ndarray, bad_rows: np.ndarray, key: str, problem: str, value: np.ndarray,
           expected: str = "") -> None:
    """Raise ValueError for the first row in ``bad_rows`` (if any), naming its agent and its value."""
    if not bad_rows.any():
        return
    row = int(np.flatnonzero(bad_rows)[0])
    if not expected:
        low, high = ACTION_BOUNDS[key]
        expected = f"finite real values in [{low}, {high}]"
    shown = value[row].tolist() if isinstance(value[row], (np.ndarray, np.generic)) else value[row]
    raise ValueError(f"agent_{int(agent_ids[row])}: action '{key}' is {problem} (got {shown!r}); "
                     f"expected {expected}")
