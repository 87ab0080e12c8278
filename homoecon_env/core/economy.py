"""Economy: the batched core that runs the stages of a step in contract order (docs/design.md section 2).

Trainers may drive it directly (one tensor row per agent slot); `homoecon_env.env` wraps it in the
PettingZoo dict API and produces identical trajectories from the same seed and actions.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from homoecon_env.config import EconomyConfig
from homoecon_env.core import consumption, lifecycle, observe, production, signals, space, threads
from homoecon_env.core.actions import ACTION_BOUNDS, ActionChecker, Actions, token_one_hot
from homoecon_env.core.state import EconomyState, initial_state, normal, uniform
from homoecon_env.core.stats import StepRecord, step_stats
from homoecon_env.trade import TradeResult, clear_market
from homoecon_env.validation import check_seed

__all__ = ["ACTION_BOUNDS", "Actions", "Economy", "MarketNotConvergedWarning", "NonFiniteStateError", "StepOutput"]

FLOAT32_MAX = float(np.finfo(np.float32).max)  # observations are float32: larger holdings would read inf


class MarketNotConvergedWarning(RuntimeWarning):
    """The market hit its iteration cap: its allocation conserves goods and is individually rational,
    but is not the optimum to the solver's tolerance. Issued once per Economy."""


class NonFiniteStateError(ValueError):
    """A step (or reset) would emit a non-finite observation or reward; nothing was changed."""


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

    `market_options`: keyword arguments passed to `clear_market` on every step (e.g. ``tol``,
    ``max_iter``); empty by default (its defaults). A market that stops at its iteration cap
    issues one `MarketNotConvergedWarning` per Economy, naming the step and the KKT residual.
    """

    def __init__(self, config: Optional[EconomyConfig] = None):
        self.config = config or EconomyConfig()
        self.jobs = production.JobTable.from_config(self.config)
        self.need = np.array(self.config.need, dtype=np.float64)
        self.generator = torch.Generator()
        self.market_options: dict = {}
        self._arrays: Optional[EconomyState] = None  # the state as NumPy arrays: what the stages work on
        self._tensors: Optional[EconomyState] = None  # torch views of _arrays, made when `state` is first read
        self.observation: Optional[observe.Observation] = None
        self._stats_inputs: Optional[StepRecord] = None
        self._last_stats: Optional[dict] = None
        self._last_trade: Optional[TradeResult] = None
        self._all_peers = None  # cached [N, K] "everyone else" assignment
        self._checker = ActionChecker(self.config)
        self._warned_market = False
        self.pool = threads.BlockPool()  # worker threads of the per-agent passes at large N (core.threads)
        # The world's tables when space changes anything (docs/design.md section 13); None: section 2 exactly.
        self.space = space.SpaceTable.from_config(self.config) \
            if self.config.spatial or self.config.resource_map is not None else None

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> observe.Observation:
        """Found a new population (docs/design.md section 7, as Gymnasium does).

        ``seed``: an int in [0, 2**64 - 1] reseeds the generator. Without one, the first reset uses
        ``config.seed`` (OS entropy when that is None too), and later resets continue the generator,
        so consecutive episodes differ. A bad seed raises ValueError and changes nothing.
        """
        check_seed("seed", seed, allow_none=True)
        before = self.generator.get_state()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        elif self._arrays is None:  # never reset (nor loaded): start from the config's seed
            if self.config.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.config.seed)
        state = initial_state(self.config, self.generator)
        if self.config.private_signals:  # docs/design.md section 11: the first boom
            state = state.replace(boom=signals.initial_boom(self.generator, self.config))
        self._refuse_non_finite(state, state, None, before, "reset")
        observation = self._observe(state)
        self._set_state(state)
        self._last_trade = None
        self._stats_inputs, self._last_stats = None, None
        self.observation = observation
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
        """Run one step in contract order. Bad actions raise ValueError, and a step that would emit a
        non-finite observation or reward raises NonFiniteStateError, before anything changes."""
        if self._arrays is None:
            raise ValueError("step() before reset(): call reset() first")
        if self.done:
            raise ValueError(f"the episode ended at max_steps={self.config.max_steps}; call reset()")
        actions = self._checked_arrays(actions)
        config, state = self.config, self._arrays
        t = state.step
        generator_before = self.generator.get_state()  # restored if the step is refused
        noise = normal(self.generator, state.num_slots)
        boom, factors = state.boom, None
        if config.private_signals:  # docs/design.md section 11: this production's boom, then the next one
            factors = signals.job_factors(state.boom, config)
            boom = signals.next_boom(state.boom, uniform(self.generator, 2), config)
        holdings, region, moved, migration_lost = state.holdings, state.region, None, None
        if config.spatial:  # docs/design.md section 13: move first, then work and trade in the new region
            holdings, region, moved, migration_lost = space.migrate(holdings, region, actions.move, self.space,
                                                                    config.migration_cost)
        pre_trade, produced, effort = production.produce(
            holdings, state.ages, actions.job, actions.effort, noise, self.jobs, t, config, factors,
            self.space, region)
        weights = self.normalised_trade_weights(actions.trade_weights)
        if config.spatial:
            trade = self._clear_regional(pre_trade, weights, region)
            region_prices = trade.prices.numpy()
        else:
            trade = clear_market(pre_trade, weights, warm_start=self._last_trade, pool=self.pool,
                                 **self.market_options)
            region_prices = trade.prices.numpy()[None]
        consumed, left, reward = consumption.consume(
            trade.allocation.numpy(), actions.consume, state.utility_weights, effort, config)
        holdings, ages = consumption.decay_and_age(left, state.ages, config)
        cause = lifecycle.death_causes(ages, consumed, config, self.need)
        dead = cause != lifecycle.ALIVE
        holdings, lost = lifecycle.bequeath(holdings, dead, state.agent_ids, state.parent_ids, state.parent_slots)
        broadcast = token_one_hot(actions.broadcast, config.vocab_size) if config.symbolic else actions.broadcast
        lived = state.replace(holdings=holdings, ages=ages, broadcast=broadcast, effort=effort,
                              job=actions.job, lifetime_reward=state.lifetime_reward + reward, step=t + 1,
                              boom=boom, region=region, region_prices=region_prices)
        truncated = t + 1 >= config.max_steps
        new_state, births = lifecycle.reproduce(lived, dead, not truncated, self.generator, config)
        self._refuse_non_finite(lived, new_state, reward, generator_before, f"step {t + 1}")
        observation = self._observe(new_state)
        births = lifecycle.Births(torch.from_numpy(births.born), torch.from_numpy(births.parent_slots), births.founders)
        self._set_state(new_state)
        self._last_trade = trade
        self.observation = observation
        self._stats_inputs = StepRecord(state.ages, produced, pre_trade, trade, consumed, reward, cause, births, lost,
                                        actions.job, effort, migration_lost, moved, region, state)
        self._last_stats = None
        if not trade.converged:
            self._warn_market(t + 1, trade)
        tensor = torch.from_numpy
        return StepOutput(tensor(reward), tensor(cause), tensor(state.agent_ids), births, truncated, self.observation,
                          lived, tensor(pre_trade), tensor(consumed), tensor(effort), trade)

    def terminal_self_features(self, step: StepOutput) -> torch.Tensor:
        """[N, S] own features of every row at the end of `step`, before newborns took the dead rows:
        the last observation of those who died."""
        return torch.from_numpy(observe.self_features(step.dying_state, self.jobs, self.config, self.space, self.pool))

    def _clear_regional(self, pre_trade: np.ndarray, weights: np.ndarray, region: np.ndarray) -> TradeResult:
        """Each region's own market (docs/design.md section 13): prices [G, R], NaN rows for empty regions."""
        return clear_market(pre_trade, weights, groups=region, num_groups=self.config.num_regions,
                            warm_start=self._last_trade, **self.market_options)

    # -- guards ------------------------------------------------------------------------------
    def _refuse_non_finite(self, lived: EconomyState, state: EconomyState, reward, generator_before, when: str) -> None:
        """Raise NonFiniteStateError naming the quantity and the agent if an observation (float32) or
        ``reward`` [N] would not be finite; the generator is put back first.

        ``lived``: the acting agents after the step, before births (their holdings bound everyone's:
        a gift is a share of a parent's, a founder's endowment is bounded by the config); ``state``:
        the state after births (newborns' tastes). What could overflow: holdings (past float32 in
        observations), rewards and tastes; the rest of an observation is bounded by construction
        (actions are clipped; config bounds keep the season angle finite). The common case costs
        three reductions.
        """
        holdings, tastes = lived.holdings, state.utility_weights
        if holdings.max() <= FLOAT32_MAX and (reward is None or math.isfinite(reward.sum())) \
                and math.isfinite(tastes.sum()):  # nan fails each test too
            return
        problem = None
        if not holdings.max() <= FLOAT32_MAX:
            row, good = np.unravel_index(np.argmax(~(holdings <= FLOAT32_MAX)), holdings.shape)
            problem = (f"agent_{lived.agent_ids[row]}'s holdings of {self.config.resources[good]} are "
                       f"{holdings[row, good]:.4g}, beyond float32's range ({FLOAT32_MAX:.4g}) in observations "
                       f"(holdings grow with initial_holdings and the jobs' output, shrink with decay_rate)")
        elif reward is not None and not np.isfinite(reward).all():
            row = int(np.flatnonzero(~np.isfinite(reward))[0])
            problem = f"agent_{lived.agent_ids[row]}'s reward is {reward[row]} (rest_bonus and consumption set it)"
        elif not np.isfinite(tastes).all():
            row = int(np.flatnonzero(~np.isfinite(tastes).all(axis=1))[0])
            problem = f"agent_{state.agent_ids[row]}'s utility weights are {tastes[row].tolist()} (mutation sets them)"
        if problem is not None:  # else only a sum overflowed: every entry is finite
            self.generator.set_state(generator_before)
            raise NonFiniteStateError(f"{when}: refused, it would emit a non-finite observation or reward: {problem}; "
                                      "the economy is unchanged")

    def _warn_market(self, step: int, trade: TradeResult) -> None:
        """One MarketNotConvergedWarning per Economy: later ones are in last_stats["trade_converged"]."""
        if self._warned_market:
            return
        self._warned_market = True
        warnings.warn(f"step {step}: the market stopped at its iteration cap without converging (KKT residual "
                      f"{trade.kkt_residual:.3g}); its allocation conserves goods and is individually rational but "
                      "is not the optimum. Later steps report it in last_stats['trade_converged'] and "
                      "['trade_kkt_residual'] without warning.", MarketNotConvergedWarning, stacklevel=3)

    # -- actions ---------------------------------------------------------------------------
    def check_actions(self, actions: Actions) -> Actions:
        """Validate shapes, dtypes, finiteness and job range; clip finite values into their Box.

        Takes torch tensors or arrays; returns Actions of fresh torch tensors (float64, job int64; in
        the symbolic broadcast mode the broadcast is [N, L] int64 tokens, checked like the job).
        Raises ValueError naming the agent and the key, e.g. ``agent_7: action 'effort' is nan``.
        """
        checked = self._checked_arrays(actions)
        values = {f.name: getattr(checked, f.name) for f in fields(checked)}
        return Actions(**{name: None if value is None else torch.from_numpy(value) for name, value in values.items()})

    def _checked_arrays(self, actions: Actions) -> Actions:
        """`check_actions` with NumPy arrays out, for the stages."""
        return self._checker.check(actions, self._arrays.agent_ids, self.pool)

    @staticmethod
    def normalised_trade_weights(trade_weights: np.ndarray) -> np.ndarray:
        """[N, R] trade weights on the simplex; an all-zero row means uniform."""
        total = trade_weights.sum(axis=1, keepdims=True)
        return np.where(total > 0, trade_weights / np.maximum(total, 1e-300), 1.0 / trade_weights.shape[1])

    # -- observation -----------------------------------------------------------------------
    def _observe(self, state: EconomyState) -> observe.Observation:
        """The observation of a NumPy state, with this step's peers."""
        n, k = state.num_slots, self.config.peers_observed
        if self.config.spatial:  # peers from the regions within peer_radius (docs/design.md section 13)
            peer_index = space.sample_regional_peers(state.region, state.alive, k, self.space, self.generator)
            return observe.observe(state, peer_index, self.jobs, self.config, space=self.space, pool=self.pool)
        if self.config.samples_peers:
            peer_index = observe.sample_peers(n, k, self.generator, self.pool).numpy()
        else:
            if self._all_peers is None:
                self._all_peers = observe.everyone_else(n, k).numpy()
            peer_index = self._all_peers
        # Sampled peers are always rows; "everyone else" is padded with -1 only when K > N - 1.
        return observe.observe(state, peer_index, self.jobs, self.config, all_valid=k <= n - 1,
                               owned=self.config.samples_peers, pool=self.pool)

    # -- figures for loggers -----------------------------------------------------------------
    @property
    def last_stats(self) -> dict:
        """Economy-wide figures of the last step (docs/design.md section 3); {} before the first step.

        Goods, [R] NumPy arrays summed over agents: ``totals`` (holdings after trade), ``produced``,
        ``inputs_used`` (by supply-chain jobs), ``consumed``, ``decayed``, ``lost`` (holdings of the
        childless dead), ``founder_endowment`` (goods given to founders when fewer than two agents
        survive; zeros otherwise), ``prices`` (sum 1). They close the ledger, per good: holdings
        before + produced - inputs_used - consumed - decayed - lost + founder_endowment = holdings after.
        Numbers: ``step``, ``trade_volume``, ``gini`` (of wealth after trade), ``mean_reward``,
        ``mean_age`` (of those who acted), ``mean_effort`` (spent), ``births``, ``founders``,
        ``deaths_age``, ``deaths_starvation``, ``job_counts`` [J]; the market's ``trade_iterations``,
        ``trade_init_iterations``, ``trade_outer_iterations``, ``trade_converged``,
        ``trade_ir_violation``, ``trade_conservation_error``, ``trade_kkt_residual``.
        Spatial worlds (docs/design.md section 13) add ``migration_lost`` [R] (goods movers paid; the ledger
        then subtracts it too), ``movers``, ``region_prices`` [G, R] (NaN rows: no market there),
        ``region_population`` [G] (live agents after the step), ``region_traders`` [G], territory:
        ``region_control`` [G] (founder id of the lineage with most members there, -1: empty),
        ``region_control_share`` [G], ``control_changes`` (regions whose controller changed this step);
        ``prices`` is then the traders-weighted mean of the regions' prices.
        Computed on first access: code that never reads them (a bare rollout) does not pay for them.
        """
        if self._last_stats is None:
            self._last_stats = {} if self._stats_inputs is None else step_stats(
                self._stats_inputs, self._arrays.holdings, self._arrays.step, self.jobs, self.config, self._arrays)
        return self._last_stats

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

    def _with_regions(self, state: EconomyState, last_trade) -> EconomyState:
        """``state`` (torch) with the space fields of an old snapshot filled in, and checked against the config."""
        n, g, r = state.num_slots, self.config.num_regions, self.config.num_resources
        if state.region is None:
            if self.config.spatial:
                raise ValueError("snapshot has no 'region' (saved before space existed): it loads only into a "
                                 "1x1 world without carrying_capacity")
            state = state.replace(region=torch.zeros(n, dtype=torch.int64))
        if state.region_prices is None:
            prices = torch.full((g, r), 1.0 / r, dtype=torch.float64)
            last_prices = last_trade["prices"] if isinstance(last_trade, dict) else getattr(last_trade, "prices", None)
            if isinstance(last_prices, torch.Tensor) and tuple(last_prices.shape) == (r,):
                prices = last_prices.to(torch.float64).reshape(1, r).clone()
            state = state.replace(region_prices=prices)
        if self.config.spatial and state.lineage is None:  # saved before lineages: each agent roots its own
            state = state.replace(lineage=state.agent_ids.clone())
        if tuple(state.region.shape) != (n,) or tuple(state.region_prices.shape) != (g, r):
            raise ValueError(f"snapshot 'region' {tuple(state.region.shape)} / 'region_prices' "
                             f"{tuple(state.region_prices.shape)}: expected ({n},) / ({g}, {r}) for this config")
        if n and not (0 <= int(state.region.min()) and int(state.region.max()) < g):
            raise ValueError(f"snapshot 'region' holds regions outside [0, {g})")
        return state

    def load_state_dict(self, snapshot: dict) -> None:
        """Restore what `state_dict` returned (copies its tensors, so the snapshot may be reused).

        A snapshot saved before space existed (no ``region`` / ``region_prices``) loads as a 1x1 world:
        everyone in region 0, its prices the last market's (1/R before any)."""
        state = EconomyState(**{name: value.clone() if isinstance(value, torch.Tensor) else value
                                for name, value in snapshot["state"].items()})
        if state.num_slots != self.config.num_agents:
            raise ValueError(f"snapshot has {state.num_slots} agent slots, config num_agents={self.config.num_agents}")
        state = self._with_regions(state, snapshot["last_trade"])
        trade = snapshot["last_trade"]
        if trade is not None and not isinstance(trade, TradeResult):
            if not isinstance(trade, dict) or set(trade) != {f.name for f in fields(TradeResult)}:
                got = sorted(trade) if isinstance(trade, dict) else type(trade).__name__
                raise ValueError(f"snapshot 'last_trade': expected None or a dict of TradeResult's fields, got {got}")
            trade = TradeResult(**trade)
        self._set_state(state.as_numpy())
        self.generator.set_state(snapshot["generator"])
        self._last_trade = trade
        self.observation = observe.observe(self._arrays, snapshot["peer_index"].numpy(), self.jobs, self.config,
                                           space=self.space)
        self._stats_inputs, self._last_stats = None, None
