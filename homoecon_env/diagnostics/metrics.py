"""Economy-wide metrics for the research questions of docs/design.md section 1.

Pure functions: NumPy arrays (or CPU torch tensors) in, Python numbers or NumPy arrays out, no
module state. Shapes use N agents, R resources, J jobs, K observed peers, B broadcast dim, T
logged steps. Importing this module loads NumPy only; the entropy-based measures load
``scipy.stats`` the first time they are called.

Contents, by question:
- inequality: :func:`gini` (the core's own, from :mod:`homoecon_env.core.stats`);
- specialization: :func:`job_shares`, :func:`job_concentration`, :func:`agent_specialization`,
  :func:`specialization_index`, :func:`division_of_labour`;
- communication: :func:`broadcast_pca`, :func:`covariance_spectrum`, :func:`participation_ratio`;
- social filtering: :func:`attention_entropy`, :func:`attention_matrix`;
- markets: :func:`relative_prices`, :func:`trade_volume`.

Graphs (favourite graph, PageRank, genealogies) live in :mod:`.graphs` (networkx); correlations
and confidence intervals in :mod:`.stats` (scipy).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from homoecon_env.core.stats import gini  # re-exported: metrics.gini is the core's
from homoecon_env.diagnostics.arrays import bool_mask, finite_float_array, int_array, peer_index_array, to_numpy

__all__ = [
    "to_numpy",
    "gini",
    "job_shares",
    "job_concentration",
    "agent_specialization",
    "specialization_index",
    "division_of_labour",
    "broadcast_pca",
    "covariance_spectrum",
    "participation_ratio",
    "attention_entropy",
    "attention_matrix",
    "relative_prices",
    "trade_volume",
]


def _normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy over the last axis in units of log(size of that axis), by ``scipy.stats.entropy``.

    1 for a uniform row, 0 for a one-hot row; 0 for an all-zero row and when the axis has 1 slot.
    """
    from scipy.stats import entropy  # here, not at the top: importing metrics stays NumPy-only

    size = probabilities.shape[-1]
    if size < 2 or probabilities.size == 0:
        return np.zeros(probabilities.shape[:-1])
    empty = probabilities.sum(axis=-1) <= 0
    rows = np.where(empty[..., None], 1.0, probabilities)  # any valid row; replaced by 0 below
    return np.where(empty, 0.0, entropy(rows, base=size, axis=-1))


# --------------------------------------------------------------------------- inequality


# gini is the core's own (homoecon_env.core.stats, NumPy only): one definition for last_stats and reports.


# --------------------------------------------------------------------------- specialization


def job_shares(jobs: Any, num_jobs: int) -> np.ndarray:
    """Fraction of agents doing each job.

    ``jobs``: integer job choices in [0, J), shape [N] or [T, N] (one row per step).
    Returns float64 [J] (or [T, J]) fractions summing to 1 per row; all zeros if N == 0.
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs: expected >= 1, got {num_jobs}")
    choices = int_array(jobs, "jobs", 0, num_jobs)
    if choices.ndim not in (1, 2):
        raise ValueError(f"jobs: expected [N] or [T, N], got shape {choices.shape}")
    rows = choices.reshape(-1, choices.shape[-1])  # [T, N]
    offsets = rows + num_jobs * np.arange(rows.shape[0])[:, None]
    counts = np.bincount(offsets.ravel(), minlength=rows.shape[0] * num_jobs)
    counts = counts.reshape(rows.shape[0], num_jobs).astype(np.float64)  # [T, J]
    shares = counts / max(rows.shape[1], 1)
    return shares[0] if choices.ndim == 1 else shares


def job_concentration(shares: Any) -> float | np.ndarray:
    """Population-level concentration of jobs: 1 - entropy(shares) / log(J).

    ``shares``: [J] (or [T, J]) job fractions, e.g. from :func:`job_shares`. 1 when every agent
    does the same job, 0 when jobs are evenly split; 0 when J == 1. It says nothing about
    whether the *same* agents keep the same job: see :func:`specialization_index`.
    """
    probabilities = finite_float_array(shares, "shares", ndim=(1, 2))
    totals = probabilities.sum(axis=-1, keepdims=True)
    probabilities = np.divide(probabilities, totals, out=np.zeros_like(probabilities),
                              where=totals > 0)
    concentration = 1.0 - _normalised_entropy(probabilities)
    concentration = np.where(totals[..., 0] > 0, concentration, 0.0)
    return float(concentration) if concentration.ndim == 0 else concentration


def _agent_job_frequencies(job_history: Any, num_jobs: int, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-agent job frequencies [N, J] over the counted steps, and the counts of steps [N]."""
    history = int_array(job_history, "job_history", 0, num_jobs)
    if history.ndim != 2:
        raise ValueError(f"job_history: expected [T, N], got shape {history.shape}")
    counted = bool_mask(mask, history.shape, "mask")  # [T, N]
    num_agents = history.shape[1]
    keys = (np.arange(num_agents)[None, :] * num_jobs + history)[counted]
    counts = np.bincount(keys, minlength=num_agents * num_jobs).reshape(num_agents, num_jobs)
    steps = counts.sum(axis=1)  # [N]
    frequencies = counts / np.maximum(steps, 1)[:, None]
    return frequencies, steps


def agent_specialization(job_history: Any, num_jobs: int, mask: Any = None) -> np.ndarray:
    """Per-agent consistency of job choice over time: 1 - entropy(own job frequencies) / log(J).

    ``job_history``: [T, N] job choices; column n is agent row n. Agents die and their row is
    reused by a newborn, so pass ``mask`` [T, N] (True = count this step), e.g. True only since
    the row's current occupant was born, or a window shorter than a lifetime.
    Returns [N]: 1 for an agent that always does the same job, 0 for one that spreads evenly over
    all J jobs; nan for an agent with no counted step. With J == 1 every counted agent scores 1.
    """
    frequencies, steps = _agent_job_frequencies(job_history, num_jobs, mask)
    consistency = 1.0 - _normalised_entropy(frequencies) if num_jobs > 1 else np.ones(len(steps))
    return np.where(steps > 0, consistency, np.nan)


def specialization_index(job_history: Any, num_jobs: int, mask: Any = None) -> float:
    """Mean over agents of :func:`agent_specialization` (agents with no counted step ignored).

    1: every agent sticks to one job; 0: every agent spreads evenly over jobs. Returns 0.0 when no
    agent has a counted step. Combine with :func:`job_concentration` (are they all in the *same*
    job?) or use :func:`division_of_labour`, which is high only when both hold.
    """
    consistency = agent_specialization(job_history, num_jobs, mask)
    finite = consistency[np.isfinite(consistency)]
    return float(finite.mean()) if finite.size else 0.0


def division_of_labour(job_history: Any, num_jobs: int, mask: Any = None) -> float:
    """Mutual information between agent and job, divided by log(J), in [0, 1].

    Decomposes the entropy of the population's job mix (all counted agent-steps pooled) into the
    part explained by who the agent is: I(agent; job) = H(job) - mean_agent H(job | agent), the
    agents weighted by their counted steps. 1 when each agent always does one job and the jobs
    are evenly split across agents; 0 when everyone does the same job, or everyone randomises
    the same way. Returns 0.0 with J == 1 or no counted steps. Shapes as in
    :func:`agent_specialization`.
    """
    frequencies, steps = _agent_job_frequencies(job_history, num_jobs, mask)
    if num_jobs < 2 or steps.sum() == 0:
        return 0.0
    weights = steps / steps.sum()  # [N]
    pooled = weights @ frequencies  # [J]
    scale = math.log(num_jobs)
    conditional = float(weights @ _normalised_entropy(frequencies)) * scale
    marginal = float(_normalised_entropy(pooled)) * scale
    return float(np.clip((marginal - conditional) / scale, 0.0, 1.0))


# --------------------------------------------------------------------------- communication


def covariance_spectrum(broadcasts: Any) -> np.ndarray:
    """Eigenvalues [B], descending, of the sample covariance (ddof=1) of broadcasts [N, B].

    Low-dimensional messages show as a few large eigenvalues. Returns zeros when N < 2 (the
    covariance is undefined there) and when every agent sends the same message.
    """
    messages = finite_float_array(broadcasts, "broadcasts", ndim=2)
    num_agents, dim = messages.shape
    if num_agents < 2:
        return np.zeros(dim)
    centred = messages - messages.mean(axis=0)
    covariance = centred.T @ centred / (num_agents - 1)  # [B, B]
    eigenvalues = np.linalg.eigvalsh(covariance)[::-1]
    return np.clip(eigenvalues, 0.0, None)  # eigvalsh may return -1e-17 for a null direction


def participation_ratio(eigenvalues: Any) -> float:
    """Effective dimension of a spectrum: (sum l)^2 / sum l^2.

    ``eigenvalues``: [B] nonnegative (e.g. from :func:`covariance_spectrum`). 1 when all variance
    lies in one direction, B when it is spread evenly (isotropic). Returns 0.0 when every
    eigenvalue is zero (no variance, or N < 2). Tiny negatives from round-off are treated as 0;
    a clearly negative eigenvalue raises ValueError.
    """
    spectrum = finite_float_array(eigenvalues, "eigenvalues", ndim=1)
    scale = np.abs(spectrum).max() if spectrum.size else 0.0
    if spectrum.size and spectrum.min() < -1e-9 * max(scale, 1.0):
        raise ValueError(f"eigenvalues: expected nonnegative, got min {spectrum.min()}")
    spectrum = np.clip(spectrum, 0.0, None)
    squares = float(spectrum @ spectrum)
    if squares <= 0.0:
        return 0.0
    return float(spectrum.sum() ** 2 / squares)


def broadcast_pca(broadcasts: Any, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project broadcasts [N, B] onto their first principal components.

    Returns ``(coords [N, n_components], explained_variance_ratio [n_components])``, computed by
    SVD of the centred messages. Each component's sign is fixed so that its largest loading is
    positive, so the picture does not flip between calls. Components beyond min(N - 1, B), or when
    there is no variance (N < 2, identical messages), are zero columns with ratio 0.
    """
    if n_components < 1:
        raise ValueError(f"n_components: expected >= 1, got {n_components}")
    messages = finite_float_array(broadcasts, "broadcasts", ndim=2)
    num_agents = messages.shape[0]
    coords = np.zeros((num_agents, n_components))
    ratio = np.zeros(n_components)
    if num_agents < 2:
        return coords, ratio
    centred = messages - messages.mean(axis=0)
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)  # [k], [k, B]
    variance = singular_values**2
    total = variance.sum()
    if total <= 1e-300:
        return coords, ratio
    kept = min(n_components, num_agents - 1, len(singular_values))  # centring costs one rank
    directions = directions[:kept]
    largest = np.argmax(np.abs(directions), axis=1)
    signs = np.sign(directions[np.arange(kept), largest])
    directions = directions * np.where(signs == 0, 1.0, signs)[:, None]
    coords[:, :kept] = centred @ directions.T
    ratio[:kept] = variance[:kept] / total
    return coords, ratio


# --------------------------------------------------------------------------- social filtering


def attention_entropy(attention: Any, mask: Any = None, *, normalised: bool = False) -> float:
    """Mean over agents of the entropy (nats) of their attention over live peers.

    ``attention``: [N, K] nonnegative weights over peer slots; ``mask``: [N, K], nonzero where the
    slot holds a live peer (None: every slot live). Each row is renormalised over its live slots,
    so it need not sum to 1. Uniform attention over n live peers gives log(n); attention on one
    peer gives 0. With ``normalised=True`` each agent's entropy is divided by log(its live peers),
    giving [0, 1]; agents with fewer than 2 live peers (nothing to choose) are then left out.
    Agents with no live peer or zero total attention are always left out; 0.0 if none remain.
    """
    weights = finite_float_array(attention, "attention", ndim=2)
    if weights.size and weights.min() < 0:
        raise ValueError(f"attention: expected nonnegative weights, got min {weights.min()}")
    from scipy.stats import entropy as entropy_of  # here, not at the top: importing metrics stays NumPy-only

    live = bool_mask(mask, weights.shape, "mask")
    weights = np.where(live, weights, 0.0)
    totals = weights.sum(axis=1)  # [N]
    if weights.shape[1] == 0:
        return 0.0
    # scipy renormalises each row; rows with nothing to renormalise are dropped below.
    entropy = entropy_of(np.where(totals[:, None] > 0, weights, 1.0), axis=1)  # [N] nats
    num_live = live.sum(axis=1)
    counted = totals > 0
    if normalised:
        counted &= num_live >= 2
        entropy = entropy / np.log(np.maximum(num_live, 2))
    return float(entropy[counted].mean()) if counted.any() else 0.0


def attention_matrix(attention: Any, peer_index: Any, num_agents: int | None = None) -> np.ndarray:
    """Dense agent-to-agent attention [N, num_agents]: entry (i, j) = attention i pays to agent j.

    ``attention``: [N, K] weights over peer slots; ``peer_index``: [N, K] the agent row each slot
    shows, -1 for an empty slot (ignored). Slots showing the same peer are summed.
    ``num_agents`` defaults to N. Memory is N * num_agents floats: for plots of small populations.
    """
    weights = finite_float_array(attention, "attention", ndim=2)
    num_agents = weights.shape[0] if num_agents is None else int(num_agents)
    index = peer_index_array(peer_index, weights.shape, num_agents)
    dense = np.zeros((weights.shape[0], num_agents))
    rows, slots = np.nonzero(index >= 0)
    np.add.at(dense, (rows, index[rows, slots]), weights[rows, slots])
    return dense


# --------------------------------------------------------------------------- markets


def relative_prices(prices: Any) -> np.ndarray:
    """Prices [R] (or [T, R]) normalised to sum 1 along the last axis.

    Only price ratios matter in an exchange economy; this fixes the numeraire. A row of all
    zeros (no good is scarce) becomes uniform 1/R. Raises ValueError on negative prices.
    """
    values = finite_float_array(prices, "prices", ndim=(1, 2))
    if values.size and values.min() < 0:
        raise ValueError(f"prices: expected nonnegative, got min {values.min()}")
    totals = values.sum(axis=-1, keepdims=True)
    uniform = np.full_like(values, 1.0 / max(values.shape[-1], 1))
    return np.divide(values, totals, out=uniform, where=totals > 0)


def trade_volume(before: Any, after: Any, *, per_resource: bool = False) -> float | np.ndarray:
    """Units of goods that changed hands: 0.5 * sum_{i,r} |after_ir - before_ir|.

    ``before``, ``after``: holdings [N, R] before and after trade. Trade conserves each good, so
    what buyers gain equals what sellers give; the half counts each unit once. Returns a float
    (summed over goods, in goods' own units) or [R] per good with ``per_resource=True``.
    """
    held_before = finite_float_array(before, "before", ndim=2)
    held_after = finite_float_array(after, "after", ndim=2)
    if held_before.shape != held_after.shape:
        raise ValueError(f"after: expected shape {held_before.shape} like before, got {held_after.shape}")
    per_good = 0.5 * np.abs(held_after - held_before).sum(axis=0)  # [R]
    return per_good if per_resource else float(per_good.sum())

