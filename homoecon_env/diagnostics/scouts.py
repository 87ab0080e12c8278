"""Is the private-signals structure used? Two per-step numbers (docs/design.md section 11).

Pure NumPy, no torch, no env. Both numbers look at the *listeners*: the live agents that are not scouts
(a scout sees the boom itself and has no reason to listen).

- :func:`attention_on_scouts`: the attention listeners put on scout peers, divided by the scouts' share of
  the live peers in their view. 1 means scouts get their share (what uniform attention gives), 2 twice it.
  Pooled over listeners: (sum over listeners of the attention mass on scout peers) / (sum over listeners
  of the scouts' share of their live peers), so a listener with no scout in view adds 0 to both sums;
  nan when no listener has a scout in view or there is no attention.
- :func:`listeners_on_boom`: the share of listeners whose chosen job is the job in boom at that production
  (1 / J by chance when jobs are chosen blind).
"""
from __future__ import annotations

import numpy as np


def attention_on_scouts(attention: np.ndarray, peer_index: np.ndarray, mask: np.ndarray, scout: np.ndarray,
                        alive: np.ndarray | None = None) -> tuple[float, float]:
    """(attention mass on scouts, scouts' share of live peers), each summed over listeners, for one step.

    ``attention``, ``peer_index`` (row each peer slot shows, -1 empty), ``mask`` (1 live peer) [N, K];
    ``scout`` [N] bool; ``alive`` [N] bool (default all). Each listener's attention is renormalised over its
    live peers (a weight on an empty slot counts for nothing). The ratio of the two sums is the "attention on
    scouts" (1 = uniform); keep the sums to pool several steps before dividing.
    """
    attention, mask = np.asarray(attention, dtype=np.float64), np.asarray(mask) > 0
    peer_index, scout = np.asarray(peer_index), np.asarray(scout, dtype=bool)
    if attention.shape != mask.shape or peer_index.shape != mask.shape or scout.shape != (mask.shape[0],):
        raise ValueError(f"attention_on_scouts: attention {attention.shape}, peer_index {peer_index.shape} and "
                         f"mask {mask.shape} must be [N, K] alike and scout {scout.shape} [N]")
    alive = np.ones_like(scout) if alive is None else np.asarray(alive, dtype=bool)
    peer_scout = scout[np.where(mask, peer_index, 0)] & mask  # [N, K]
    weights = np.where(mask, attention, 0.0)
    total = weights.sum(axis=1)
    seen = mask.sum(axis=1)
    listener = alive & ~scout & (seen > 0) & (total > 0)
    mass = (weights * peer_scout).sum(axis=1)[listener] / total[listener]
    share = peer_scout.sum(axis=1)[listener] / seen[listener]
    return float(mass.sum()), float(share.sum())


def ratio(mass, share) -> float:
    """Pooled attention on scouts from per-step sums (arrays or floats): sum(mass) / sum(share), nan if 0/0."""
    mass, share = float(np.nansum(mass)), float(np.nansum(share))
    return mass / share if share > 0 else float("nan")


def listeners_on_boom(jobs: np.ndarray, boom: int, scout: np.ndarray, alive: np.ndarray | None = None) -> float:
    """Share of live non-scouts whose ``jobs`` [N] entry is ``boom``; nan when there is none (or no boom)."""
    jobs, scout = np.asarray(jobs), np.asarray(scout, dtype=bool)
    alive = np.ones_like(scout) if alive is None else np.asarray(alive, dtype=bool)
    listener = alive & ~scout
    if boom < 0 or not listener.any():
        return float("nan")
    return float((jobs[listener] == boom).mean())
