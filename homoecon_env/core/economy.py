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
from homoecon_env.core.state import EconomyState, initial_state, normal
from homoecon_env.trade import TradeResult, clear_market

ACTION_BOUNDS = {"broadcast": (-1.0, 1.0), "effort": (0.0, 1.0), "trade_weights": (0.0, 1.0), "consume": (0.0, 1.0)}


@dataclass(frozen=True)
class Actions:
    """Batched actions, one row per slot (DESIGN.md section 3): torch tensors or NumPy arrays."""

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
    dying_state: EconomyState  # NumPy arrays: the state after ageing, before births (Economy.terminal_self_features)
    pre_trade: torch.Tensor  # [N, R] holdings entering the market (after production)
    consumed: torch.Tensor  # [N, R] goods each acting agent ate this step
    effort: torch.Tensor  # [N] effort actually spent (chosen effort after the age and input caps)
    trade: TradeResult  # allocation [N, R] = holdings leaving the market, prices, solver figures


class Economy:
    """The whole economy as arrays. `reset(seed)`, then `step(actions)` until `done`.

    `state`, observations and step outputs are torch tensors; the stages compute on NumPy views of
    the same memory (see `homoecon_env.core.state`). Everything after `reset(seed)` is a pure
    function of the seed and the actions: one torch generator draws initial traits, yield noise,
    parents, mutations and peer samples.
    """

    def __init__(self, config: Optional[EconomyConfig] = None):
        self.config = config or EconomyConfig()
        self.jobs = production.JobTable.from_config(self.config)
        self.need = np.array(self.config.need, dtype=np.float64)
        self.generator = torch.Generator()
        self._arrays: Optional[EconomyState] = None  # the state as NumPy arrays: what the stages work on
        self._tensors: Optional[EconomyState] = None  # torch views of _arrays, made when `state` is first read
        self.observation: Optional[observe.Observation] = None
        self._stats_inputs = None
        self._last_stats: Optional[dict] = None
        self._last_trade: Optional[TradeResult] = None
        self._all_peers = None  # cached [N, K] "everyone else" assignment
        c = self.config
        bounds = [ACTION_BOUNDS["broadcast"]] * c.broadcast_dim + [ACTION_BOUNDS["effort"]] \
            + [ACTION_BOUNDS["trade_weights"]] * c.num_resources + [ACTION_BOUNDS["consume"]] * c.num_resources
        self._action_low, self._action_high = np.array(bounds, dtype=np.float64).T.copy()  # [B + 1 + 2R] each
        self._float_widths = (("broadcast", c.broadcast_dim), ("effort", 0), ("trade_weights", c.num_resources),
                              ("consume", c.num_resources))  # float action keys, 0 for a scalar per row

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> observe.Observation:
        """Found a new population. `seed=None` uses config.seed (and fresh entropy when that is None too)."""
        seed = self.config.seed if seed is None else seed
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self._set_state(initial_state(self.config, self.generator))
        self._last_trade = None
        self._stats_inputs, self._last_stats = None, None
        self.observation = self._observe(self._arrays)
        return self.observation

    @property
    def state(self) -> Optional[EconomyState]:
        """The economy between steps as torch tensors (views of the arrays the stages work on);
        None before `reset`."""
        if self._tensors is None and self._arrays is not None:
            self._tensors = self._arrays.as_torch()
        return self._tensors

    @property
    def state_arrays(self) -> Optional[EconomyState]:
        """The same state as NumPy arrays: what the stages compute on (read it, do not write it)."""
        return self._arrays

    def _set_state(self, arrays: EconomyState) -> None:
        self._arrays, self._tensors = arrays, None

    @property
    def done(self) -> bool:
        return self._arrays is not None and self._arrays.step >= self.config.max_steps

    def step(self, actions: Actions) -> StepOutput:
        """Run one step in contract order. Bad actions raise ValueError before anything changes."""
        if self._arrays is None:
            raise ValueError("step() before reset(): call reset() first")
        if self.done:
            raise ValueError(f"the episode ended at max_steps={self.config.max_steps}; call reset()")
        actions = self._checked_arrays(actions)
        config, state = self.config, self._arrays
        t = state.step
        noise = normal(self.generator, state.num_slots)
        pre_trade, produced, effort = production.produce(
            state.holdings, state.ages, actions.job, actions.effort, noise, self.jobs, t, config)
        trade = clear_market(pre_trade, self.normalised_trade_weights(actions.trade_weights), warm_start=self._last_trade)
        consumed, left, reward = consumption.consume(
            trade.allocation.numpy(), actions.consume, state.utility_weights, effort, config)
        holdings, ages = consumption.decay_and_age(left, state.ages, config)
        cause = lifecycle.death_causes(ages, consumed, config, self.need)
        dead = cause != lifecycle.ALIVE
        holdings, lost = lifecycle.bequeath(holdings, dead, state.agent_ids, state.parent_ids, state.parent_slots)
        lived = state.replace(holdings=holdings, ages=ages, broadcast=actions.broadcast, effort=effort,
                              job=actions.job, lifetime_reward=state.lifetime_reward + reward, step=t + 1)
        truncated = t + 1 >= config.max_steps
        new_state, births = lifecycle.reproduce(lived, dead, not truncated, self.generator, config)
        births = lifecycle.Births(torch.from_numpy(births.born), torch.from_numpy(births.parent_slots), births.founders)
        self._set_state(new_state)
        self._last_trade = trade
        self.observation = self._observe(new_state)
        self._stats_inputs = (state.ages, produced, pre_trade, trade, consumed, reward, cause, births, lost, actions.job,
                              effort)
        self._last_stats = None
        tensor = torch.from_numpy
        return StepOutput(tensor(reward), tensor(cause), tensor(state.agent_ids), births, truncated, self.observation,
                          lived, tensor(pre_trade), tensor(consumed), tensor(effort), trade)

    def terminal_self_features(self, step: StepOutput) -> torch.Tensor:
        """[N, S] own features of every row at the end of `step`, before newborns took the dead rows:
        the last observation of those who died."""
        return torch.from_numpy(observe.self_features(step.dying_state, self.jobs, self.config))

    # -- actions ---------------------------------------------------------------------------
    def check_actions(self, actions: Actions) -> Actions:
        """Validate shapes, finiteness and job range; clip finite values into their Box.

        Takes torch tensors or arrays; returns Actions of fresh torch tensors (float64, job int64).
        Raises ValueError naming the agent and the key, e.g. ``agent_7: action 'effort' is nan``.
        """
        checked = self._checked_arrays(actions)
        return Actions(**{f.name: torch.from_numpy(getattr(checked, f.name)) for f in fields(checked)})

    def _checked_arrays(self, actions: Actions) -> Actions:
        """`check_actions` with NumPy arrays out, for the stages. The common case costs a few array
        calls: all float keys are checked and clipped as one matrix."""
        n, num_jobs = self._arrays.num_slots, self.config.num_jobs
        columns = []
        for key, width in self._float_widths:
            value = _as_array(getattr(actions, key), key)
            shape = (n, width) if width else (n,)
            if value.shape != shape:
                raise ValueError(f"action '{key}' has shape {value.shape}, expected {shape} (one row per slot)")
            columns.append(value.reshape(n, -1))
        try:
            joined = np.concatenate(columns, axis=1, dtype=np.float64)  # [N, B + 1 + 2R]
        except TypeError as error:
            raise ValueError(f"actions: a float action is not numeric ({error})") from None
        if not np.isfinite(joined).all():
            for (key, _), value in zip(self._float_widths, columns):
                self._refuse(~np.isfinite(value.astype(np.float64)).all(axis=1), key, "not finite", value)
        joined = np.minimum(np.maximum(joined, self._action_low), self._action_high)
        job = _as_array(actions.job, "job")
        if job.shape != (n,):
            raise ValueError(f"action 'job' has shape {job.shape}, expected {(n,)} (one row per slot)")
        integral = job.dtype.kind in "iu"
        if not integral or (n and (job.min() < 0 or job.max() >= num_jobs)):  # the common case ends here
            problem = f"not an int in [0, {num_jobs})"
            if job.dtype.kind not in "iuf":
                self._refuse(np.ones(n, dtype=bool), "job", problem, job)
            with np.errstate(invalid="ignore"):
                bad = (job < 0) | (job >= num_jobs) | (False if integral else (job != np.round(job)) | ~np.isfinite(job))
            self._refuse(bad, "job", problem, job)
        b, r = self.config.broadcast_dim, self.config.num_resources
        return Actions(joined[:, :b], job.astype(np.int64), joined[:, b], joined[:, b + 1:b + 1 + r],
                       joined[:, b + 1 + r:])

    def _refuse(self, bad_rows, key, problem, value):
        if bad_rows.any():
            row = int(np.flatnonzero(bad_rows)[0])
            agent = f"agent_{int(self._arrays.agent_ids[row])}"
            shown = value[row].tolist()
            what = "nan" if problem == "not finite" and any(math.isnan(v) for v in np.ravel(shown)) else problem
            raise ValueError(f"{agent}: action '{key}' is {what} (got {shown}); expected "
                             + (f"finite values in {list(ACTION_BOUNDS[key])}" if key in ACTION_BOUNDS else problem))

    @staticmethod
    def normalised_trade_weights(trade_weights: np.ndarray) -> np.ndarray:
        """[N, R] trade weights on the simplex; an all-zero row means uniform."""
        total = trade_weights.sum(axis=1, keepdims=True)
        return np.where(total > 0, trade_weights / np.maximum(total, 1e-300), 1.0 / trade_weights.shape[1])

    # -- observation -----------------------------------------------------------------------
    def _observe(self, state: EconomyState) -> observe.Observation:
        """The observation of a NumPy state, with this step's peers."""
        n, k = state.num_slots, self.config.peers_observed
        if self.config.samples_peers:
            peer_index = observe.sample_peers(n, k, self.generator).numpy()
        else:
            if self._all_peers is None:
                self._all_peers = observe.everyone_else(n, k).numpy()
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

        # The step's NumPy arrays: a few microseconds per figure.
        after_trade = trade.allocation.numpy()
        return {
            "step": self._arrays.step,
            "totals": after_trade.sum(axis=0),
            "produced": produced.sum(axis=0),
            "consumed": consumed.sum(axis=0),
            "prices": trade.prices.numpy(),
            "trade_volume": float(0.5 * np.abs(after_trade - pre_trade).sum()),
            "gini": float(gini(after_trade.sum(axis=1))),
            "mean_reward": float(reward.mean()),
            "mean_age": float(ages_before.mean()),  # of the agents that acted
            "births": int(np.count_nonzero(births.born.numpy())),
            "founders": births.founders,
            "deaths_age": int(np.count_nonzero(cause == lifecycle.AGE)),
            "deaths_starvation": int(np.count_nonzero(cause == lifecycle.STARVATION)),
            "lost": lost,
            "job_counts": np.bincount(job, minlength=self.config.num_jobs),
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
        """Everything needed to continue bit-exactly, as plain data (tensors, numbers, strings, dicts; see
        agents.checkpoint): the state arrays, the generator, the market's warm start and the peer sample.

        The tensors are the live state's own memory, not copies: save them (or copy them) before the
        next `step`. Not kept: the last step's stats, which a resumed run does not need.
        """
        if self.state is None:
            raise ValueError("state_dict() before reset()")
        trade = self._last_trade
        return {
            "state": {f.name: getattr(self.state, f.name) for f in fields(self.state)},
            "generator": self.generator.get_state(),
            # the warm start of the next market clearing, as a plain dict of TradeResult's fields
            "last_trade": None if trade is None else {f.name: getattr(trade, f.name) for f in fields(trade)},
            "peer_index": self.observation.peer_index,
        }

    def load_state_dict(self, snapshot: dict) -> None:
        """Restore what `state_dict` returned (copies its tensors, so the snapshot may be reused)."""
        state = EconomyState(**{name: value.clone() if isinstance(value, torch.Tensor) else value
                                for name, value in snapshot["state"].items()})
        if state.num_slots != self.config.num_agents:
            raise ValueError(f"snapshot has {state.num_slots} agent slots, config num_agents={self.config.num_agents}")
        trade = snapshot["last_trade"]
        if trade is not None and not isinstance(trade, TradeResult):
            if not isinstance(trade, dict) or set(trade) != {f.name for f in fields(TradeResult)}:
                got = sorted(trade) if isinstance(trade, dict) else type(trade).__name__
                raise ValueError(f"snapshot 'last_trade': expected None or a dict of TradeResult's fields, got {got}")
            trade = TradeResult(**trade)
        self._set_state(state.as_numpy())
        self.generator.set_state(snapshot["generator"])
        self._last_trade = trade
        self.observation = observe.observe(self._arrays, snapshot["peer_index"].numpy(), self.jobs, self.config)
        self._stats_inputs, self._last_stats = None, None


def _as_array(value, key: str) -> np.ndarray:
    """A NumPy view (or copy) of a torch tensor or array-like action ``key``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.double() if value.dtype == torch.bfloat16 else value).numpy()  # NumPy has no bfloat16
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"action '{key}': cannot convert {type(value).__name__} to an array ({error})") from None
