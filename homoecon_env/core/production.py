"""Production (docs/design.md section 2, stage 3): seasonal, stochastic, input-limited effort, age cap."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from homoecon_env.config import EconomyConfig
from homoecon_env.core.space import crowding_factor, season_by_region


@dataclass(frozen=True)
class JobTable:
    """The jobs of a config as arrays. J jobs, R resources."""

    output: np.ndarray  # [J, R] goods per unit of effort at the peak of the season
    inputs: np.ndarray  # [J, R] goods used per unit of effort (supply chains)
    phase: np.ndarray  # [J] radians
    period: np.ndarray  # [J] steps
    yield_noise: np.ndarray  # [J] sigma of the log-yield
    needs_inputs: bool  # some job uses inputs (supply chains)

    @classmethod
    def from_config(cls, config: EconomyConfig) -> "JobTable":
        zeros = (0.0,) * config.num_resources
        return cls(
            output=np.array([job.output for job in config.jobs], dtype=np.float64),
            inputs=np.array([job.inputs or zeros for job in config.jobs], dtype=np.float64),
            phase=np.array([job.phase for job in config.jobs], dtype=np.float64),
            period=np.array([job.period for job in config.jobs], dtype=np.float64),
            yield_noise=np.array([config.yield_noise if job.yield_noise is None else job.yield_noise
                                  for job in config.jobs], dtype=np.float64),
            needs_inputs=any(job.inputs is not None and any(v > 0 for v in job.inputs) for job in config.jobs),
        )


def season_angle(jobs: JobTable, step: int) -> np.ndarray:
    """[J] the angle pi/2 * t / period + phase of each job's season at step t."""
    return (math.pi / 2) * step / jobs.period + jobs.phase


def seasonal_factor(jobs: JobTable, step: int) -> np.ndarray:
    """[J] cos^2 of the season angle: 1 at the peak of a job's season, 0 out of season."""
    return np.cos(season_angle(jobs, step)) ** 2


def season_features(jobs: JobTable, step: int) -> np.ndarray:
    """[2J] (sin, cos) of every job's season angle, the calendar agents observe."""
    angle = season_angle(jobs, step)
    return np.concatenate([np.sin(angle), np.cos(angle)])


def effort_cap_by_age(ages: np.ndarray, config: EconomyConfig) -> np.ndarray:
    """[N] the seed's age cap (1 - age/max_age) ** age_effort_penalty, in [0, 1]."""
    return np.maximum(1.0 - ages / config.max_age, 0.0) ** config.age_effort_penalty


def produce(holdings, ages, job, effort, noise, jobs: JobTable, step: int, config: EconomyConfig, job_factors=None,
            space=None, region=None):
    """Work one step.

    holdings [N, R], ages [N], job [N] int, effort [N] in [0, 1], noise [N] standard normal draws.
    Returns (holdings after production [N, R], produced [N, R], effort spent [N]).
    Effort spent = chosen effort, capped by age and by the inputs the worker holds; inputs used
    are removed from holdings. Yield noise is lognormal with mean 1: exp(sigma z - sigma^2 / 2).
    ``job_factors`` [J] (optional): a further output factor per job (the boom of private signals).
    ``space`` (a `core.space.SpaceTable`, spatial worlds only) with ``region`` [N]: the season angle is
    shifted by the region's phase offset, output is multiplied by the resource map at (region, job) and by
    the crowding factor min(1, carrying_capacity / workers on that job in that region) (docs/design.md
    section 13). Without ``space`` the computation is exactly section 2's.
    """
    spent = effort * effort_cap_by_age(ages, config)
    if jobs.needs_inputs:
        inputs = jobs.inputs[job]  # [N, R]
        affordable = np.where(inputs > 0, holdings / np.maximum(inputs, 1e-300), np.inf)
        spent = np.minimum(spent, affordable.min(axis=1))
    sigma = jobs.yield_noise[job]
    yield_factor = np.exp(sigma * noise - 0.5 * sigma * sigma)  # [N]
    if space is None:
        season = seasonal_factor(jobs, step) if job_factors is None else seasonal_factor(jobs, step) * job_factors
        per_effort = (jobs.output * season[:, None])[job]  # [N, R]
    else:
        scale = season_by_region(jobs.period, jobs.phase, step, space) * space.resource_map  # [G, J]
        if job_factors is not None:
            scale = scale * job_factors[None, :]
        row = scale[region, job] * crowding_factor(region, job, spent > 0, jobs.output.shape[0], space)  # [N]
        per_effort = jobs.output[job] * row[:, None]  # [N, R]
    produced = per_effort * (spent * yield_factor)[:, None]
    after = holdings + produced
    if jobs.needs_inputs:
        after = np.maximum(after - inputs * spent[:, None], 0.0)
    return after, produced, spent
