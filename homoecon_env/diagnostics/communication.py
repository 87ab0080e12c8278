"""Communication metrics over one step's messages (docs/design.md section 11; issue 15 point 2).

Shapes: N agents (speakers), B message dimensions. A message array is either
    continuous [N, B] floats in [-1, 1] (the `broadcast` action, `broadcast_mode="continuous"`), or
    symbolic   [N, L] integers (L tokens; `broadcast_mode="symbolic"`).
Integer arrays are treated as categorical tokens (no binning; Hamming distance between messages);
float arrays are binned where a discrete estimator needs it. A "meaning" / private state is [N, D]
floats (e.g. own holdings, tastes and a one-hot job) or [N] for one scalar feature.

All functions are pure (NumPy, SciPy); randomness comes only from a passed ``numpy.random.Generator``.
Entropies and mutual information are in bits.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

MESSAGE_BINS = 4  # per dimension, equal width over the broadcast box [-1, 1]
STATE_BINS = 4  # equal-frequency bins of a scalar private-state feature
MAX_PAIRS = 20_000  # topographic similarity: all pairs up to this, a seeded subsample beyond


def _messages(messages, name: str = "messages") -> np.ndarray:
    array = np.asarray(messages)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [N, B] with N >= 1, got {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or inf")
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected a float or integer array, got dtype {array.dtype}")
    return array


def discretise_messages(messages, bins: int = MESSAGE_BINS, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """[N, B] integer codes: floats cut into ``bins`` equal-width bins per dimension over [low, high]
    (values outside are clipped to the end bins); integer (token) messages are returned unchanged."""
    array = _messages(messages)
    if array.dtype.kind != "f":
        return array.astype(np.int64)
    if bins < 1:
        raise ValueError(f"bins: expected >= 1, got {bins}")
    scaled = (np.clip(array, low, high) - low) / (high - low) * bins
    return np.minimum(scaled.astype(np.int64), bins - 1)


def _plugin_entropy(codes: np.ndarray) -> float:
    """Plug-in (maximum-likelihood) entropy in bits of the rows of ``codes`` [N, C] as symbols."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def message_entropy(messages, bins: int = MESSAGE_BINS) -> float:
    """Entropy in bits of the distribution of distinct messages over the N speakers.

    ``messages`` [N, B]. Continuous messages are discretised per dimension into ``bins`` equal-width
    bins over the broadcast box [-1, 1] (`discretise_messages`) and each whole binned vector is one
    symbol; token messages [N, L] are used as they are (each distinct token sequence is one symbol).
    Plug-in estimate: H = -sum_m p(m) log2 p(m) with p the fraction of speakers sending m. It lies in
    [0, log2 N]: 0 when everyone says the same thing, log2 N when every message differs.
    Why binned rather than the Gaussian log det of the covariance: the binned entropy is finite for
    collapsed (identical or low-rank) messages, where the Gaussian estimate is -inf, is comparable to
    the symbolic mode's entropy, and does not assume the messages are Gaussian (tanh squashes them).
    """
    return _plugin_entropy(discretise_messages(messages, bins))


def _pair_indices(n: int, max_pairs: int, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.triu_indices(n, k=1)
    if len(first) > max_pairs:
        if rng is None:
            raise ValueError(f"rng: needed to subsample {len(first)} pairs down to max_pairs={max_pairs}")
        keep = rng.choice(len(first), size=max_pairs, replace=False)
        first, second = first[keep], second[keep]
    return first, second


def _pair_distances(array: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Euclidean distance between rows for floats, Hamming (count of differing tokens) for integers."""
    if array.dtype.kind == "f":
        return np.linalg.norm(array[first] - array[second], axis=1)
    return (array[first] != array[second]).sum(axis=1).astype(np.float64)


def topographic_similarity(meanings, messages, rng: Optional[np.random.Generator] = None,
                           max_pairs: int = MAX_PAIRS) -> float:
    """Spearman correlation over speaker pairs between meaning distances and message distances.

    ``meanings`` [N, D] (each speaker's private state; standardise the columns first if their units
    differ), ``messages`` [N, B] floats (Euclidean distance) or [N, L] tokens (Hamming distance).
    All N (N - 1) / 2 pairs are used up to ``max_pairs``; beyond that a subsample without replacement
    drawn with ``rng``. 1: messages order pairs exactly as meanings do; about 0: unrelated. NaN when
    either distance is constant over the pairs (or N < 3).
    """
    meaning, message = _messages(meanings, "meanings").astype(np.float64), _messages(messages)
    if meaning.shape[0] != message.shape[0]:
        raise ValueError(f"meanings: {meaning.shape[0]} rows but messages has {message.shape[0]}")
    n = message.shape[0]
    if n < 3:
        return float("nan")
    first, second = _pair_indices(n, max_pairs, rng)
    a, b = _pair_distances(meaning, first, second), _pair_distances(message, first, second)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy_stats.spearmanr(a, b).statistic)


def _quantile_codes(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bin codes of a 1-d float array (ranks cut into ``bins`` groups; ties share a rank)."""
    ranks = scipy_stats.rankdata(values, method="min") - 1  # 0 .. N-1
    return np.minimum((ranks * bins) // len(values), bins - 1).astype(np.int64)


def _plugin_mi(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information in bits between two 1-d integer code arrays."""
    joint = np.stack([x, y], axis=1)
    return _plugin_entropy(x[:, None]) + _plugin_entropy(y[:, None]) - _plugin_entropy(joint)


def message_state_mi(messages, state, message_bins: int = STATE_BINS, state_bins: int = STATE_BINS) -> float:
    """Mutual information in bits between a message and a scalar private-state feature; the largest
    over message dimensions.

    ``messages`` [N, B] (floats: each dimension cut into ``message_bins`` equal-frequency bins;
    tokens: each position used as is), ``state`` [N] floats (cut into ``state_bins`` equal-frequency
    bins). Estimator: the binned plug-in MI(m_d; s) = H(m_d) + H(s) - H(m_d, s) for every dimension
    d, then the max over d (a state may be carried by one dimension only). The plug-in estimate is
    biased upwards at small N, and the max adds to that bias: read it only against
    `message_state_mi_baseline`, the same estimator on messages shuffled across agents.
    """
    message = _messages(messages)
    value = np.asarray(state, dtype=np.float64)
    if value.shape != (message.shape[0],):
        raise ValueError(f"state: expected shape ({message.shape[0]},) (one value per speaker), got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError("state: contains NaN or inf")
    s = _quantile_codes(value, state_bins)
    best = 0.0
    for d in range(message.shape[1]):
        column = message[:, d]
        codes = _quantile_codes(column.astype(np.float64), message_bins) if column.dtype.kind == "f" \
            else column.astype(np.int64)
        best = max(best, _plugin_mi(codes, s))
    return best


def message_state_mi_baseline(messages, state, rng: np.random.Generator, repeats: int = 20,
                              **bins) -> tuple[float, float]:
    """(MI, shuffled MI): `message_state_mi` of the messages as sent, and its mean over ``repeats``
    permutations of the messages across agents (which keeps each message and the state marginals
    but breaks who said what): the estimator's value when the message carries no information."""
    message = _messages(messages)
    actual = message_state_mi(message, state, **bins)
    shuffled = [message_state_mi(message[rng.permutation(message.shape[0])], state, **bins)
                for _ in range(repeats)]
    return actual, float(np.mean(shuffled))


def causal_influence(listen: Callable[[object], np.ndarray], observation,
                     intervene: Callable[[object, int], object], speakers: Sequence[int]) -> float:
    """Mean change in the other agents' actions when one speaker's message is replaced.

    ``listen(observation) -> [N, A]``: every agent's deterministic action output (means, or logits)
    for an observation; ``intervene(observation, speaker) -> observation``: a copy in which the
    peers' view of ``speaker``'s message is replaced (e.g. `zero_speaker_message`); it must not
    change ``observation``. For each speaker s: the Euclidean norm of the change of agent i's output
    row, averaged over every agent i != s (agents that do not observe s count as 0 change); then the
    mean over ``speakers``. 0 for listeners that ignore messages.
    """
    speakers = list(speakers)
    if not speakers:
        raise ValueError("speakers: expected at least one speaker")
    base = np.asarray(listen(observation), dtype=np.float64)
    if base.ndim != 2:
        raise ValueError(f"listen: expected an [N, A] output, got shape {base.shape}")
    n = base.shape[0]
    changes = []
    for speaker in speakers:
        if not 0 <= speaker < n:
            raise ValueError(f"speakers: {speaker} is not a slot in [0, {n})")
        moved = np.asarray(listen(intervene(observation, speaker)), dtype=np.float64)
        if moved.shape != base.shape:
            raise ValueError(f"listen: output shape changed from {base.shape} to {moved.shape} under intervention")
        change = np.linalg.norm(moved - base, axis=1)
        changes.append(np.delete(change, speaker).mean() if n > 1 else 0.0)
    return float(np.mean(changes))


def zero_speaker_message(observation, speaker: int, broadcast_dim: int):
    """A copy of an env `Observation` (torch tensors: ``peers`` [N, K, P] whose first ``broadcast_dim``
    features are the peer's last broadcast, ``peer_index`` [N, K]) where every view of slot
    ``speaker``'s message is 0 (the centre of the broadcast box). ``observation`` is unchanged."""
    import dataclasses

    peers = observation.peers.clone()
    seen = observation.peer_index == speaker  # [N, K]
    peers[..., :broadcast_dim][seen] = 0.0
    return dataclasses.replace(observation, peers=peers)


def private_state(holdings, tastes, jobs, num_jobs: int) -> np.ndarray:
    """[N, 2R + J] the speaker's private state as a "meaning": log1p(own holdings) [N, R], tastes
    [N, R] and a one-hot of the job chosen [N, J], each column standardised over the N speakers (a
    constant column becomes 0), so that no unit dominates the Euclidean meaning distance."""
    holdings, tastes = np.asarray(holdings, dtype=np.float64), np.asarray(tastes, dtype=np.float64)
    jobs = np.asarray(jobs, dtype=np.int64)
    one_hot = np.zeros((len(jobs), num_jobs))
    one_hot[np.arange(len(jobs)), jobs] = 1.0
    state = np.concatenate([np.log1p(np.clip(holdings, 0, None)), tastes, one_hot], axis=1)
    spread = state.std(axis=0)
    return np.where(spread > 0, (state - state.mean(axis=0)) / np.where(spread > 0, spread, 1.0), 0.0)


STEP_KEYS = ("message_entropy", "topographic_similarity", "mi_job", "mi_job_shuffled", "mi_wealth",
             "mi_wealth_shuffled")


def step_summary(messages, holdings, tastes, jobs, num_jobs: int, rng: np.random.Generator,
                 repeats: int = 10) -> dict:
    """The per-step communication metrics (`STEP_KEYS`) of one step's messages [N, B] and the
    speakers' private state: holdings [N, R], tastes [N, R], jobs [N] (see `private_state`).
    mi_job / mi_wealth: `message_state_mi` with the job chosen and with log1p of total holdings,
    each beside its shuffled baseline (``repeats`` permutations)."""
    messages = _messages(messages)
    meanings = private_state(holdings, tastes, jobs, num_jobs)
    wealth = np.log1p(np.clip(np.asarray(holdings, dtype=np.float64), 0, None).sum(axis=1))
    mi_job = message_state_mi_baseline(messages, np.asarray(jobs, dtype=np.float64), rng, repeats)
    mi_wealth = message_state_mi_baseline(messages, wealth, rng, repeats)
    return dict(zip(STEP_KEYS, (message_entropy(messages), topographic_similarity(meanings, messages, rng),
                                *mi_job, *mi_wealth)))


INFLUENCE_SPEAKERS = 4  # speakers sampled per step for `learner_influence` (each: one act on a copy)


def actions_matrix(actions, num_jobs: int, vocab_size: Optional[int] = None) -> np.ndarray:
    """[N, B + J + 1 + 2R] float64 rows of an env `Actions`: broadcast, one-hot job, effort, trade
    weights, consumption (a switched job moves a row by sqrt(2)). With ``vocab_size`` V the broadcast
    is [N, L] tokens (the symbolic mode), entered as their one-hot [N, L * V] (a switched token moves a
    row by sqrt(2) too)."""
    def one_hot_of(codes: np.ndarray, size: int) -> np.ndarray:  # [N, C] ints -> [N, C * size]
        flat = np.zeros((codes.shape[0], codes.shape[1], size))
        np.put_along_axis(flat, codes[..., None], 1.0, axis=2)
        return flat.reshape(codes.shape[0], -1)

    jobs = np.asarray(actions.job, dtype=np.int64)
    one_hot = one_hot_of(jobs[:, None], num_jobs)
    broadcast = actions.broadcast if vocab_size is None else \
        one_hot_of(np.asarray(actions.broadcast, dtype=np.int64), vocab_size)
    parts = (broadcast, one_hot, np.asarray(actions.effort)[:, None], actions.trade_weights, actions.consume)
    return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts], axis=1)


def learner_listener(learner, num_jobs: int, vocab_size: Optional[int] = None) -> Callable[[object], np.ndarray]:
    """``listen(observation) -> [N, A]`` (`actions_matrix`) for any learner with ``act``, without
    touching it: each call acts on a fresh deep copy of a snapshot taken now, so every call starts
    from the same learner state and the same random stream (common random numbers: an output moves
    only because the observation did; for the Gaussian heads of REINFORCE/PPO the pre-squash change is
    exactly the change of the mean). The global torch/NumPy random states are restored after each
    call. Raises TypeError if the learner cannot be deep-copied."""
    import copy

    import torch

    snapshot = copy.deepcopy(learner)

    def listen(observation) -> np.ndarray:
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                actions = copy.deepcopy(snapshot).act(observation)
        finally:
            np.random.set_state(numpy_state)
        return actions_matrix(actions, num_jobs, vocab_size)
    return listen


def learner_influence(learner, observation, broadcast_dim: int, num_jobs: int, rng: np.random.Generator,
                      speakers: int = INFLUENCE_SPEAKERS, vocab_size: Optional[int] = None) -> float:
    """`causal_influence` of ``learner`` on an env `Observation`: up to ``speakers`` slots drawn with
    ``rng``, each one's message zeroed in its peers' view (`zero_speaker_message`); the learner and
    every random stream are left as they were. NaN if the learner cannot be deep-copied.
    Symbolic mode: ``broadcast_dim`` is the message's width in a peer row, L * V (zeroed: the one-hot of
    no token, as before a first message), and ``vocab_size`` V (the learner's broadcasts are tokens)."""
    try:
        listen = learner_listener(learner, num_jobs, vocab_size)
    except TypeError:  # e.g. a plug-in learner holding a lock or an open file
        return float("nan")
    n = observation.peers.shape[0]
    chosen = np.sort(rng.choice(n, size=min(speakers, n), replace=False)).tolist()
    return causal_influence(listen, observation, lambda obs, s: zero_speaker_message(obs, s, broadcast_dim), chosen)
