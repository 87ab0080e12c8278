"""One seeding block, seeds derived from a base seed, and the global RNG states as plain data.

`rng_states` returns only tensors, ints, floats and None (docs/design.md section 7: a checkpoint
loads with ``torch.load(weights_only=True)``), and `set_rng_states` restores them bit-exactly.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (legacy global, so 0 <= seed < 2**32), torch; deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def episode_seed(seed: int, episode: int) -> int:
    """The economy's reset seed for an episode: a pure function of the run seed and the index."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def derive_seed(base: int, stream: int, index: int) -> int:
    """A seed that is a pure function of (base seed, stream, index), independent across streams."""
    return int(np.random.SeedSequence([base, stream, index]).generate_state(1)[0])


def rng_states() -> dict:
    """Python's, NumPy's and torch's global generator states as plain data.

    Python: (version, 625 words < 2**32, gauss) -> int64 tensor; NumPy: ('MT19937', 624 uint32 words,
    pos, has_gauss, cached_gaussian) -> int64 tensor and numbers; torch: its ByteTensor state.
    """
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": int(version), "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` returned."""
    python, numpy = states["python"], states["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
