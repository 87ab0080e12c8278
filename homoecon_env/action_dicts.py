"""Per-agent Dict actions -> the batched `Actions`, with checks that name the agent and key.

Both PettingZoo views use it: the named env labels rows `agent_<k>`, the slot view `slot_<i>`
(docs/design.md sections 3 and 8). Values, finiteness and job range of a well-formed batch are the
economy's checks; this module checks structure (keys, shapes, types) and names the culprit.
"""
from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import torch
from gymnasium import spaces

from homoecon_env.core.actions import ACTION_BOUNDS, REAL_KINDS, Actions, as_array, kind_name

ACTION_KEYS = ("broadcast", "job", "effort", "trade_weights", "consume")
_ACTION_KEY_SET = frozenset(ACTION_KEYS)
# The dtypes the stacked fast path takes as they are; anything else goes through the named checks.
_REAL_DTYPES = frozenset(np.dtype(kind + str(size))
                         for kind, sizes in (("float", (16, 32, 64)), ("int", (8, 16, 32, 64)),
                                             ("uint", (8, 16, 32, 64)))
                         for size in sizes)
_dtype_of = operator.attrgetter("dtype")


def dict_action_space(broadcast_dim: int, num_jobs: int, num_resources: int,
                      vocab_size: Optional[int] = None, num_moves: Optional[int] = None) -> spaces.Dict:
    """The Dict action space of one agent (docs/design.md section 3). With ``vocab_size`` V (the
    symbolic mode, section 11) the broadcast is MultiDiscrete([V] * broadcast_dim): that many tokens.
    With ``num_moves`` (a spatial world, section 13) a sixth key ``move`` is Discrete(num_moves)."""
    broadcast = spaces.Box(-1.0, 1.0, (broadcast_dim,), dtype=np.float32) if vocab_size is None \
        else spaces.MultiDiscrete([vocab_size] * broadcast_dim)
    return spaces.Dict({
        "broadcast": broadcast,
        "job": spaces.Discrete(num_jobs),
        "effort": spaces.Box(0.0, 1.0, (1,), dtype=np.float32),
        "trade_weights": spaces.Box(0.0, 1.0, (num_resources,), dtype=np.float32),
        "consume": spaces.Box(0.0, 1.0, (num_resources,), dtype=np.float32),
        **({} if num_moves is None else {"move": spaces.Discrete(num_moves)}),
    })


class DictActionStacker:
    """Stacks one Dict action per row (in row order) into `Actions` of NumPy arrays."""

    def __init__(self, action_space: spaces.Dict):
        self.num_jobs = action_space["job"].n
        self.shapes = {key: action_space[key].shape for key in ACTION_KEYS if key != "job"}
        # the Discrete keys: the job, and the move in a spatial world (docs/design.md section 13)
        self.choices = {"job": self.num_jobs}
        if "move" in action_space.spaces:
            self.choices["move"] = action_space["move"].n
        self.keys = ACTION_KEYS + (("move",) if "move" in self.choices else ())
        self.key_set = frozenset(self.keys)
        broadcast = action_space["broadcast"]
        # the symbolic mode's vocabulary V (None: a continuous Box broadcast)
        self.vocab_size = int(broadcast.nvec[0]) if isinstance(broadcast, spaces.MultiDiscrete) else None

    def stack(self, chosen: Sequence, labels: Sequence[str]) -> Actions:
        """``chosen[i]`` is the action of the row labelled ``labels[i]``. Raises ValueError naming
        the label and key of the first malformed action."""
        return self._stack_well_formed(chosen) or self._check_and_stack(chosen, labels)

    def _stack_well_formed(self, chosen: Sequence):
        """The common case in a few list-wide calls: exactly the five keys per row, every value an
        array of a real dtype and the right shape, every job an int. None for anything else, which
        `_check_and_stack` then checks row by row to name the culprit."""
        if not all((type(action) is dict or isinstance(action, Mapping)) and action.keys() == self.key_set
                   for action in chosen):
            return None
        stacked = {}
        try:
            for key in self.choices:
                values = [action[key] for action in chosen]
                if not all(issubclass(kind, (int, np.integer)) and kind is not bool for kind in set(map(type, values))):
                    return None
                value = np.asarray(values)  # int64, or uint64 / float64 / object past the int64 range
                if value.dtype.kind not in "iu":
                    return None
                stacked[key] = value
            for key, shape in self.shapes.items():
                values = [action[key] for action in chosen]
                if not _REAL_DTYPES.issuperset(map(_dtype_of, values)):  # lists, tensors, bools, complex, text
                    return None
                value = np.asarray(values)  # [N, ...] in their common dtype: the economy widens to float64
                if value.shape[1:] != shape or value.dtype.kind not in REAL_KINDS:
                    return None
                if key == "broadcast" and self.vocab_size is not None and value.dtype.kind not in "iu":
                    return None  # tokens must be ints: the row checks name the culprit
                stacked[key] = value
        except (AttributeError, TypeError, ValueError, OverflowError):
            return None
        stacked["effort"] = stacked["effort"][:, 0]
        return Actions(**stacked)

    def _check_and_stack(self, chosen: Sequence, labels: Sequence[str]) -> Actions:
        """Check every row's action one by one, raising ValueError at the first fault; then stack."""
        keys = self.keys
        columns = {key: [] for key in keys}
        for name, action in zip(labels, chosen):
            if not isinstance(action, Mapping):
                raise ValueError(f"{name}: action must be a dict with keys {list(keys)}, "
                                 f"got {type(action).__name__}")
            for key in keys:
                if key not in action:
                    raise ValueError(f"{name}: action has no '{key}' (keys: {sorted(action)})")
                columns[key].append(self._checked_choice(name, key, action[key]) if key in self.choices
                                    else self._checked_value(name, key, action[key]))
            extra = set(action) - set(keys)
            if extra:
                raise ValueError(f"{name}: action has unknown key(s) {sorted(extra)}; expected {list(keys)}")
        stacked = {key: np.stack(columns[key]).astype(
            np.int64 if key == "broadcast" and self.vocab_size is not None else np.float64) for key in self.shapes}
        stacked["effort"] = stacked["effort"][:, 0]
        return Actions(**{key: np.array(columns[key], dtype=np.int64) for key in self.choices}, **stacked)

    def _checked_job(self, name: str, value) -> int:
        """One row's job as a Python int in [0, J), or ValueError naming the row."""
        return self._checked_choice(name, "job", value)

    def _checked_choice(self, name: str, key: str, value) -> int:
        """One row's Discrete action ``key`` (job, move) as a Python int in range, or ValueError naming the row."""
        count = self.choices[key]
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, bool) or (
            isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0
            and as_array(value, key).dtype.kind in "iu")
        if not integral:
            raise ValueError(f"{name}: action '{key}' is not an int (got {value!r}, {type(value).__name__}); "
                             f"expected an int in [0, {count})")
        if not 0 <= int(value) < count:
            raise ValueError(f"{name}: action '{key}' is out of range (got {int(value)}); "
                             f"expected an int in [0, {count})")
        return int(value)

    def _checked_value(self, name: str, key: str, value) -> np.ndarray:
        """One row's float action as an array of a real dtype and its Box's shape, or ValueError
        naming the row and key. (Finiteness and clipping are the economy's.) Symbolic tokens are
        checked whole here: ints in [0, V)."""
        if key == "broadcast" and self.vocab_size is not None:
            return self._checked_tokens(name, value)
        low, high = ACTION_BOUNDS[key]
        try:
            array = as_array(value, key)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        if array.shape != self.shapes[key]:
            raise ValueError(f"{name}: action '{key}' has shape {array.shape}, expected {self.shapes[key]}")
        if array.dtype.kind not in REAL_KINDS:
            raise ValueError(f"{name}: action '{key}' is not numeric ({kind_name(array)}; got {value!r}); "
                             f"expected real numbers in [{low}, {high}]")
        return array


    def _checked_tokens(self, name: str, value) -> np.ndarray:
        """One row's symbolic broadcast as an int array of shape (L,) with tokens in [0, V), or
        ValueError naming the row."""
        expected = f"{self.shapes['broadcast'][0]} int token(s) in [0, {self.vocab_size})"
        try:
            array = as_array(value, "broadcast")
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        if array.shape != self.shapes["broadcast"]:
            raise ValueError(f"{name}: action 'broadcast' has shape {array.shape}, expected "
                             f"{self.shapes['broadcast']} ({expected})")
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name}: action 'broadcast' is not ints ({kind_name(array)}; got {value!r}); "
                             f"expected {expected}")
        if array.size and not (array.min() >= 0 and array.max() < self.vocab_size):
            raise ValueError(f"{name}: action 'broadcast' is out of range (got {array.tolist()}); expected {expected}")
        return array
