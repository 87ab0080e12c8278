"""Private signals, the positive control (docs/design.md section 11). Used only when
`EconomyConfig.private_signals` is True; otherwise nothing here runs and the economy is section 2's.

- A boom: at every production one job is in boom, its output times `boom_multiplier`. The boom is a
  Markov state: after each production it moves, with probability `boom_switch`, to one of the other
  jobs (uniformly), else it stays. It starts on a uniformly drawn job at reset.
- Scouts: the agents whose public id vector has ``id_vectors[:, 0] > 1 - 2 * scout_fraction`` (ids
  are uniform on [-1, 1], so a newborn is a scout with probability `scout_fraction`). Scouthood is
  a function of a public trait, so peers can tell a scout from the rest.
- Observation (appended, so every other column keeps its place): a scout's own features end with
  the one-hot of the job in boom at its next production [J] (zeros for everyone else); every
  peer row ends with the one-hot of the peer's last job [J] (zeros before its first step). A peer
  row at step t shows the job chosen at t - 1, under the boom of t - 1: the persistence of the boom
  is what makes that worth reading.

Random draws (two uniforms per step, one at reset) come from the economy's generator.
"""
from __future__ import annotations

import numpy as np

from homoecon_env.config import EconomyConfig
from homoecon_env.core.state import EconomyState, uniform


def extra_dims(config: EconomyConfig) -> tuple[int, int]:
    """(columns appended to `self`, columns appended to each peer row): (J, J) with private signals, else (0, 0)."""
    return (config.num_jobs, config.num_jobs) if config.private_signals else (0, 0)


def scout_threshold(config: EconomyConfig) -> float:
    """Scouts are the agents with id_vectors[:, 0] above this."""
    return 1.0 - 2.0 * config.scout_fraction


def is_scout(id_vectors: np.ndarray, config: EconomyConfig) -> np.ndarray:
    """[N] bool from id vectors [N, D]."""
    return id_vectors[:, 0] > scout_threshold(config)


def initial_boom(generator, config: EconomyConfig) -> int:
    """A uniformly drawn job (one draw)."""
    return int(min(uniform(generator, 1)[0] * config.num_jobs, config.num_jobs - 1))


def next_boom(boom: int, draws: np.ndarray, config: EconomyConfig) -> int:
    """The boom after one production, from two uniform draws on [0, 1): it moves when draws[0] <
    boom_switch, to the job (boom + 1 + floor(draws[1] * (J - 1))) mod J, i.e. uniformly among the others."""
    j = config.num_jobs
    if draws[0] >= config.boom_switch:
        return boom
    return int((boom + 1 + min(int(draws[1] * (j - 1)), j - 2)) % j)


def job_factors(boom: int, config: EconomyConfig) -> np.ndarray:
    """[J] output factor of each job at a production under ``boom``."""
    factors = np.ones(config.num_jobs)
    factors[boom] = config.boom_multiplier
    return factors


def one_hot(index: np.ndarray, width: int) -> np.ndarray:
    """[N, width] float32; a row whose index is outside [0, width) (e.g. -1) is all zeros."""
    index = np.asarray(index)
    return (index[:, None] == np.arange(width)[None, :]).astype(np.float32)


def self_columns(state: EconomyState, config: EconomyConfig) -> np.ndarray:
    """[N, J] the boom one-hot in scouts' rows, zeros elsewhere."""
    return one_hot(np.where(is_scout(state.id_vectors, config), state.boom, -1), config.num_jobs)


def public_columns(state: EconomyState, config: EconomyConfig) -> np.ndarray:
    """[N, J] the one-hot of each agent's last job (zeros before its first step)."""
    return one_hot(state.job, config.num_jobs)
