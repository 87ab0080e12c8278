"""Economy: the batched core that runs the stages of a step in contract order (DESIGN.md section 2).

Trainers may drive it directly (one tensor row per agent slot); `homoecon_env.env` wraps it in the
PettingZoo dict API and produces identical trajectories from the same seed and actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core import consumption, lifecycle, observe, production
from homoecon_env.core.state import DTYPE, EconomyState, initial_state
from homoecon_env.trade import TradeResult, clear_market

ACTION_BOUNDS = {"broadcast": (-1.0, 1.0), "effort": (0.0, 1.0), "trade_weights": (0.0, 1.0), "consume": (0.0, 1.0)}


@dataclass(frozen=True)
class Actions:
    """Batched actions, one row per slot (DESIGN.md section 3)."""

    broadcast: torch.Tensor  # [N, B] in [-1, 1]
    job: torch.Tensor  # [N] int64 in [0, J)
    effort: torch.Tensor  # [N] in [0, 1]
    trade_weights: torch.Tensor  # [N, R] in [0, 1], normalised by the env; all zeros = uniform
    consume: torch.Tensor  # [N, R] in [0, 1]


@dataclass(frozen=True)
class StepOutput:
    """What one step did. Rows are slots; `acting_ids` names the agent that acted in each row."""

    reward: torch.Tensor  # [N] float64, reward of the agent that acted in the row
    death_cause: torch.Tensor  # [N] int64: lifecycle.ALIVE, AGE or STARVATION
    acting_ids: torch.Tensor  # [N] int64, agent ids at the start of the step
    births: lifecycle.Births  # newborns now in their slots
    truncated: bool  # True on the max_steps step: every live agent is truncated
    observation: observe.Observation  # for the agents alive after the step (newborns included)
    dying_state: EconomyState  # the state after ageing, before births (see Economy.terminal_self_features)
    pre_trade: torch.Tensor  # [N, R] holdings entering the market (after production)
    consumed: torch.Tensor  # [N, R] goods each acting agent ate this step
    effort: torch.Tensor  # [N] effort actually spent (chosen effort after the age and input caps)
    trade: TradeResult  # allocation [N, R] = holdings leaving the market, prices, solver figures


class Economy:
    """The whole economy as tensors. `reset(seed)`, then `step(actions)` until `done`.

    Everything after `reset(seed)` is a pure function of the seed and the actions: one torch
    generator draws initial traits, yield noise, parents, mutations and peer samples.
    """

    def __init__(self, config: Optional[EconomyConfig] = None):
        self.config = config or EconomyConfig()
        self.jobs = production.JobTable.from_config(self.config)
        self.need = torch.tensor(self.config.need, dtype=DTYPE)
        self.generator = torch.Generator()
        self.state: Optional[EconomyState] = None
        self.observation: Optional[observe.Observation] = None
        self._stats_inputs = None
        self._last_stats: Optional[dict] = None
        self._last_trade: Optional[TradeResult] = None
        self._all_peers = None  # cached [N, K] "everyone else" assignment
        bounds = [ACTION_BOUNDS["broadcast"]] * self.config.broadcast_dim + [ACTION_BOUNDS["effort"]] \
            + [ACTION_BOUNDS["trade_weights"]] * self.config.num_resources + [ACTION_BOUNDS["consume"]] * self.config.num_resources
        self._action_bounds = torch.tensor(bounds, dtype=DTYPE).T.contiguous()  # [2, B + 1 + 2R]: low, high

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> observe.Observation:
        """Found a new population. `seed=None` uses config.seed (and fresh entropy when that is None too)."""
        seed = self.config.seed if seed is None else seed
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.state = initial_state(self.config, self.generator)
        self._last_trade = None
        self._stats_inputs, self._last_stats = None, None
        self.observation = self._observe(self.state)
        return self.observation

    @property
    def done(self) -> bool:
        return self.state is not None and self.state.step >= self.config.max_steps

    def step(self, actions: Actions) -> StepOutput:
        """Run one step in contract order. Bad actions raise ValueError before anything changes."""
        if self.state is None:
            raise ValueError("step() before reset(): call reset() first")
        if self.done:
            raise ValueError(f"the episode ended at max_steps={self.config.max_steps}; call reset()")
        actions = self.check_actions(actions)
        config, state, t = self.config, self.state, self.state.step
        noise = torch.randn(state.num_slots, generator=self.generator, dtype=DTYPE)
        pre_trade, produced, effort = production.produce(
            state.holdings, state.ages, actions.job, actions.effort, noise, self.jobs, t, config)
        trade = clear_market(pre_trade, self.normalised_trade_weights(actions.trade_weights), warm_start=self._last_trade)
        consumed, left, reward = consumption.consume(
            trade.allocation, actions.consume, state.utility_weights, effort, config)
        holdings, ages = consumption.decay_and_age(left, state.ages, config)
        cause = lifecycle.death_causes(ages, consumed, config, self.need)
        dead = cause != lifecycle.ALIVE
        holdings, lost = lifecycle.bequeath(holdings, dead, state.agent_ids, state.parent_ids, state.parent_slots)
        lived = state.replace(holdings=holdings, ages=ages, broadcast=actions.broadcast, effort=effort,
                              job=actions.job, lifetime_reward=state.lifetime_reward + reward, step=t + 1)
        truncated = t + 1 >= config.max_steps
        new_state, births = lifecycle.reproduce(lived, dead, not truncated, self.generator, config)
        self.state, self._last_trade = new_state, trade
        self.observation = self._observe(new_state)
        self._stats_inputs = (state.ages, produced, pre_trade, trade, consumed, reward, cause, births, lost, actions.job,
                              effort)
        self._last_stats = None
        return StepOutput(reward, cause, state.agent_ids, births, truncated, self.observation, lived, pre_trade,
                          consumed, effort, trade)

    def terminal_self_features(self, step: StepOutput) -> torch.Tensor:
        """[N, S] own features of every row at the end of `step`, before newborns took the dead rows:
        the last observation of those who died."""
        return observe.self_features(step.dying_state, self.jobs, self.config)

    # -- actions ---------------------------------------------------------------------------
    def check_actions(self, actions: Actions) -> Actions:
        """Validate shapes, finiteness and job range; clip finite values into their Box; float64.

        Raises ValueError naming the agent and the key, e.g. ``agent_7: action 'effort' is nan``.
        The common case costs a few tensor ops: all float keys are checked and clipped as one matrix.
        """
        n, config = self.state.num_slots, self.config
        widths = {"broadcast": config.broadcast_dim, "effort": 0, "trade_weights": config.num_resources,
                  "consume": config.num_resources}
        columns = []
        for key, width in widths.items():
            value = torch.as_tensor(getattr(actions, key))
            shape = (n, width) if width else (n,)
            if tuple(value.shape) != shape:
                raise ValueError(f"action '{key}' has shape {tuple(value.shape)}, expected {shape} (one row per slot)")
            columns.append(value.to(DTYPE).reshape(n, -1))
        joined = torch.cat(columns, dim=1)  # [N, B + 1 + 2R]
        if not bool(torch.isfinite(joined).all()):
            for key, value in zip(widths, columns):
                self._refuse(~torch.isfinite(value).all(dim=1), key, "not finite", value)
        low, high = self._action_bounds
        joined = torch.maximum(torch.minimum(joined, high), low)
        job = torch.as_tensor(actions.job)
        if tuple(job.shape) != (n,):
            raise ValueError(f"action 'job' has shape {tuple(job.shape)}, expected {(n,)} (one row per slot)")
        bad = (job < 0) | (job >= config.num_jobs)
        if job.is_floating_point():
            bad = bad | (job != job.round()) | ~torch.isfinite(job)
        self._refuse(bad, "job", f"not an int in [0, {config.num_jobs})", job)
        b, r = config.broadcast_dim, config.num_resources
        broadcast, effort, trade_weights, consume = joined.split([b, 1, r, r], dim=1)
        return Actions(broadcast, job.long(), effort[:, 0], trade_weights, consume)

    def _refuse(self, bad_rows, key, problem, value):
        if bool(bad_rows.any()):  # one sync in the common case
            row = int(bad_rows.nonzero()[0, 0])
            agent = f"agent_{int(self.state.agent_ids[row])}"
            shown = value[row].tolist()
            what = "nan" if problem == "not finite" and any(math.isnan(v) for v in np.ravel(shown)) else problem
            raise ValueError(f"{agent}: action '{key}' is {what} (got {shown}); expected "
                             + (f"finite values in {list(ACTION_BOUNDS[key])}" if key in ACTION_BOUNDS else problem))

    @staticmethod
    def normalised_trade_weights(trade_weights: torch.Tensor) -> torch.Tensor:
        """[N, R] trade weights on the simplex; an all-zero row means uniform."""
        total = trade_weights.sum(dim=1, keepdim=True)
        uniform = torch.full_like(trade_weights, 1.0 / trade_weights.shape[1])
        return torch.where(total > 0, trade_weights / total.clamp(min=1e-300), uniform)

    # -- observation -----------------------------------------------------------------------
    def _observe(self, state: EconomyState) -> observe.Observation:
        n, k = state.num_slots, self.config.peers_observed
        if self.config.samples_peers:
            peer_index = observe.sample_peers(n, k, self.generator)
        else:
            if self._all_peers is None:
                self._all_peers = observe.everyone_else(n, k)
            peer_index = self._all_peers
        # Sampled peers are always rows; "everyone else" is padded with -1 only when K > N - 1.
        return observe.observe(state, peer_index, self.jobs, self.config, all_valid=k <= n - 1)

    # -- figures for loggers -----------------------------------------------------------------
    @property
    def last_stats(self) -> dict:
        """Economy-wide figures of the last step (DESIGN.md section 3); {} before the first step.

        Computed on first access: code that never reads them (a bare rollout) does not pay for them.
        """
        if self._last_stats is None:
            self._last_stats = self._stats(*self._stats_inputs) if self._stats_inputs is not None else {}
        return self._last_stats

    def _stats(self, ages_before, produced, pre_trade, trade: TradeResult, consumed, reward, cause, births, lost, job,
               effort) -> dict:
        from homoecon_env.diagnostics.metrics import gini  # leaf module, numpy only

        after_trade = trade.allocation
        wealth = after_trade.sum(dim=1)
        return {
            "step": self.state.step,
            "totals": after_trade.sum(dim=0).numpy(),
            "produced": produced.sum(dim=0).numpy(),
            "consumed": consumed.sum(dim=0).numpy(),
            "prices": trade.prices.numpy(),
            "trade_volume": float(0.5 * (after_trade - pre_trade).abs().sum()),
            "gini": float(gini(wealth.numpy())),
            "mean_reward": float(reward.mean()),
            "mean_age": float(ages_before.to(DTYPE).mean()),  # of the agents that acted
            "births": int(births.born.sum()),
            "founders": births.founders,
            "deaths_age": int((cause == lifecycle.AGE).sum()),
            "deaths_starvation": int((cause == lifecycle.STARVATION).sum()),
            "lost": lost.numpy(),
            "job_counts": torch.bincount(job, minlength=self.config.num_jobs).numpy(),
            "mean_effort": float(effort.mean()),  # effort actually spent
            "trade_iterations": int(trade.iterations),  # projected-gradient steps
            "trade_init_iterations": int(trade.init_iterations),  # Newton steps of the dual start
            "trade_outer_iterations": int(trade.outer_iterations),  # IR multiplier updates
            "trade_converged": bool(trade.converged),
            "trade_ir_violation": float(trade.ir_violation),
            "trade_conservation_error": float(trade.conservation_error),
            "trade_kkt_residual": float(trade.kkt_residual),
        }

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly: state tensors, step counters, generator, warm start."""
        if self.state is None:
            raise ValueError("state_dict() before reset()")
        return {
            "state": {f.name: getattr(self.state, f.name) for f in fields(self.state)},
            "generator": self.generator.get_state(),
            "last_trade": self._last_trade,
            "peer_index": self.observation.peer_index,
        }

    def load_state_dict(self, snapshot: dict) -> None:
        state = EconomyState(**snapshot["state"])
        if state.num_slots != self.config.num_agents:
            raise ValueError(f"snapshot has {state.num_slots} agent slots, config num_agents={self.config.num_agents}")
        self.state = state
        self.generator.set_state(snapshot["generator"])
        self._last_trade = snapshot["last_trade"]
        self.observation = observe.observe(state, snapshot["peer_index"], self.jobs, self.config)
        self._stats_inputs, self._last_stats = None, None
