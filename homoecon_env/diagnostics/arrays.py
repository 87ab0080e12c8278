"""Array conversion and checks shared by the diagnostics modules (NumPy only).

Each check raises one ``ValueError`` naming the argument, what was expected and what arrived,
e.g. ``"jobs: values must lie in [0, 2), got min 0 and max 2"``. Torch is never imported here:
anything with ``detach`` is treated as a tensor and copied to a CPU NumPy array.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy", "float_array", "finite_float_array", "int_array", "bool_mask", "peer_index_array"]


def to_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """Return ``values`` as a NumPy array; torch tensors are detached and moved to the CPU."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def float_array(values: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``values`` as a float64 array with one of the allowed numbers of dimensions."""
    array = to_numpy(values, dtype=np.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in allowed)} array, "
                         f"got shape {array.shape}")
    return array


def finite_float_array(values: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """:func:`float_array` with every entry finite."""
    array = float_array(values, name, ndim)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains nan or inf; expected finite values")
    return array


def int_array(values: Any, name: str, low: int, high: int) -> np.ndarray:
    """``values`` as int64, every entry a whole number in ``[low, high)``."""
    array = to_numpy(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.all(np.isfinite(array)) or np.any(rounded != array):
            raise ValueError(f"{name}: expected integers, got dtype {array.dtype}")
        array = rounded
    array = array.astype(np.int64)
    if array.size and (array.min() < low or array.max() >= high):
        raise ValueError(f"{name}: values must lie in [{low}, {high}), "
                         f"got min {array.min()} and max {array.max()}")
    return array


def bool_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A boolean mask of ``shape``: all True when ``mask`` is None, else ``mask > 0``."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    array = to_numpy(mask)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    return array > 0


def peer_index_array(peer_index: Any, shape: tuple[int, ...], num_agents: int) -> np.ndarray:
    """Peer rows [N, K] (-1 for an empty slot) checked against ``shape`` and the range [-1, num_agents)."""
    index = int_array(peer_index, "peer_index", -1, num_agents)
    if index.shape != shape:
        raise ValueError(f"peer_index: expected shape {shape} like attention, got {index.shape}")
    return index
