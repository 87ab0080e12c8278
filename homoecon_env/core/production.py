"""Production (DESIGN.md section 2, stage 3): seasonal, stochastic, input-limited effort, age cap."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core.state import DTYPE


@dataclass(frozen=True)
class JobTable:
    """The jobs of a config as tensors. J jobs, R resources."""

    output: torch.Tensor  # [J, R] goods per unit of effort at the peak of the season
    inputs: torch.Tensor  # [J, R] goods used per unit of effort (supply chains)
    phase: torch.Tensor  # [J] radians
    period: torch.Tensor  # [J] steps
    yield_noise: torch.Tensor  # [J] sigma of the log-yield
    needs_inputs: bool  # some job uses inputs (supply chains)

    @classmethod
    def from_config(cls, config: EconomyConfig) -> "JobTable":
        zeros = (0.0,) * config.num_resources
        return cls(
            output=torch.tensor([job.output for job in config.jobs], dtype=DTYPE),
            inputs=torch.tensor([job.inputs or zeros for job in config.jobs], dtype=DTYPE),
            phase=torch.tensor([job.phase for job in config.jobs], dtype=DTYPE),
            period=torch.tensor([job.period for job in config.jobs], dtype=DTYPE),
            yield_noise=torch.tensor([config.yield_noise if job.yield_noise is None else job.yield_noise
                                      for job in config.jobs], dtype=DTYPE),
            needs_inputs=any(job.inputs is not None and any(v > 0 for v in job.inputs) for job in config.jobs),
        )


def season_angle(jobs: JobTable, step: int) -> torch.Tensor:
    """[J] the angle pi/2 * t / period + phase of each job's season at step t."""
    return (math.pi / 2) * step / jobs.period + jobs.phase


def seasonal_factor(jobs: JobTable, step: int) -> torch.Tensor:
    """[J] cos^2 of the season angle: 1 at the peak of a job's season, 0 out of season."""
    return torch.cos(season_angle(jobs, step)) ** 2


def season_features(jobs: JobTable, step: int) -> torch.Tensor:
    """[2J] (sin, cos) of every job's season angle, the calendar agents observe."""
    angle = season_angle(jobs, step)
    return torch.cat([torch.sin(angle), torch.cos(angle)])


def effort_cap_by_age(ages: torch.Tensor, config: EconomyConfig) -> torch.Tensor:
    """[N] the seed's age cap (1 - age/max_age) ** age_effort_penalty, in [0, 1]."""
    remaining = (1.0 - ages.to(DTYPE) / config.max_age).clamp(min=0.0)
    return remaining ** config.age_effort_penalty


def produce(holdings, ages, job, effort, noise, jobs: JobTable, step: int, config: EconomyConfig):
    """Work one step.

    holdings [N, R], ages [N], job [N] int, effort [N] in [0, 1], noise [N] standard normal draws.
    Returns (holdings after production [N, R], produced [N, R], effort spent [N]).
    Effort spent = chosen effort, capped by age and by the inputs the worker holds; inputs used
    are removed from holdings. Yield noise is lognormal with mean 1: exp(sigma z - sigma^2 / 2).
    """
    spent = effort * effort_cap_by_age(ages, config)
    inputs = jobs.inputs[job]  # [N, R]
    if jobs.needs_inputs:
        affordable = torch.where(inputs > 0, holdings / inputs.clamp(min=1e-300), torch.full_like(holdings, math.inf))
        spent = torch.minimum(spent, affordable.min(dim=1).values)
    sigma = jobs.yield_noise[job]
    yield_factor = torch.exp(sigma * noise - 0.5 * sigma * sigma)  # [N]
    per_effort = jobs.output[job] * seasonal_factor(jobs, step)[job, None]  # [N, R]
    produced = per_effort * (spent * yield_factor)[:, None]
    after = holdings + produced
    if jobs.needs_inputs:
        after = (after - inputs * spent[:, None]).clamp(min=0.0)
    return after, produced, spent
