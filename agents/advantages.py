"""PPO's per-agent math, batched over agents: generalized advantage estimation that ends at a death,
and the clipped surrogate objective (docs/design.md section 5; used by `agents.ppo`).

Every tensor is [N, T] (agents x window steps); nothing mixes rows, so agent i's results depend on
agent i's data alone.

GAE (Schulman et al. 2016) over a window of T steps, for each row:
    delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t          V_T = the bootstrap value
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}   A_T = 0
`done_t` is True where the step ended its occupant's life (a death, or the run's truncation): the
recursion stops there, so neither the value nor the advantage of whoever acts next in the slot (a
newborn: another agent) flows back into the dead agent's steps.
"""
from __future__ import annotations

import torch


def gae(reward: torch.Tensor, value: torch.Tensor, bootstrap: torch.Tensor, done: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets (A + V) of a window. reward, value [N, T]; bootstrap [N] the value of
    the observation after the last step; done [N, T] bool. A loop over the T steps (a handful), never
    over agents. Returns (advantages [N, T], returns [N, T]) in the dtype of `reward`."""
    if reward.shape != value.shape or reward.shape != done.shape or bootstrap.shape != reward.shape[:1]:
        raise ValueError(f"gae: reward {tuple(reward.shape)}, value {tuple(value.shape)} and done "
                         f"{tuple(done.shape)} must be [N, T] and bootstrap {tuple(bootstrap.shape)} [N]")
    value = value.to(reward.dtype)
    advantage = torch.zeros_like(reward)
    next_value, running = bootstrap.to(reward.dtype), torch.zeros_like(reward[:, 0])
    for t in range(reward.shape[1] - 1, -1, -1):
        ended = done[:, t]  # where, not a product with 0: a successor's value never enters, even inf or NaN
        delta = reward[:, t] + gamma * torch.where(ended, 0.0, next_value) - value[:, t]
        running = delta + gamma * lam * torch.where(ended, 0.0, running)
        advantage[:, t] = running
        next_value = value[:, t]
    return advantage, advantage + value


MAX_LOG_RATIO = 20.0  # rho = exp(min(log_ratio, 20)): finite, and no gradient from a step that far off


def clipped_surrogate(log_ratio: torch.Tensor, advantage: torch.Tensor, clip_epsilon: float) -> torch.Tensor:
    """PPO's clipped surrogate per step, min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = exp(log_ratio)
    (to be maximised). [N, T] -> [N, T]. The log ratio is capped at MAX_LOG_RATIO first: an epoch that moves
    a narrow Gaussian's mean by many stds would otherwise give rho = inf and, where A < 0, a NaN gradient
    (the step is then outside the clip range, where the surrogate's gradient is 0 anyway for A > 0)."""
    ratio = log_ratio.clamp(max=MAX_LOG_RATIO).exp()
    return torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip_epsilon, 1.0 + clip_epsilon) * advantage)
