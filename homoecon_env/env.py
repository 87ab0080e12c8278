"""The PettingZoo glue: agent names, dicts <-> tensors, input checks (docs/design.md section 3).

All economics lives in `homoecon_env.core.Economy`; this module only converts. Name-keyed dicts
exist only here.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers

from homoecon_env.action_dicts import DictActionStacker, dict_action_space
from homoecon_env.config import NUM_MOVES, EconomyConfig
from homoecon_env.core import Actions, Economy, StepOutput, signals, space
from homoecon_env.core.lifecycle import DEATH_CAUSES
from homoecon_env.core.production import season_features
from homoecon_env.render import RenderModes
from homoecon_env.scenarios import env_config

_NAME = re.compile(r"agent_(0|[1-9][0-9]*)\Z")


class AgentNames(Sequence):
    """`agent_0` ... `agent_<limit-1>` without materialising the strings: O(1) `len`, `in` and indexing."""

    def __init__(self, limit: int):
        self.limit = limit

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [f"agent_{k}" for k in range(*index.indices(self.limit))]
        k = index + self.limit if index < 0 else index
        if not 0 <= k < self.limit:
            raise IndexError(f"agent index {index} out of range for {self.limit} possible agents")
        return f"agent_{k}"

    def __contains__(self, name) -> bool:
        return agent_number(name) is not None and agent_number(name) < self.limit

    def __iter__(self):
        return (f"agent_{k}" for k in range(self.limit))

    def __repr__(self) -> str:
        return f"AgentNames(agent_0 .. agent_{self.limit - 1})"


def agent_number(name) -> Optional[int]:
    """k for a well-formed name `agent_<k>`, else None."""
    match = _NAME.match(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


class HomoEconEnv(ParallelEnv):
    """An artificial economy of N agents who broadcast, work, trade, consume, age, die and reproduce.

    ## Description
    Each step runs broadcast -> production -> trade (projected gradient market clearing) ->
    consumption -> decay and ageing -> death and reproduction (docs/design.md section 2). Social filtering
    over peers happens inside the learners; the env supplies the peers' public features.

    ## Action Space (Dict)
    | key | space | meaning |
    |---|---|---|
    | broadcast | Box(-1, 1, (B,)) | public message, seen by peers in their next observation |
    | job | Discrete(J) | which job to work this step |
    | effort | Box(0, 1, (1,)) | effort, capped by age and by inputs held |
    | trade_weights | Box(0, 1, (R,)) | weights w of the trade objective, normalised; all zeros = uniform |
    | consume | Box(0, 1, (R,)) | fraction of post-trade holdings eaten (capped at max_consume) |

    With `broadcast_mode="symbolic"` (docs/design.md section 11) `broadcast` is MultiDiscrete([V] * L):
    L = message_length tokens from a vocabulary of V = vocab_size symbols; a token that is not an int in
    [0, V) raises ``ValueError`` naming the agent.

    Finite values outside a Box are clipped. NaN/inf, a wrong shape, a missing key, a value that is
    not a real number (bools, complex numbers, text), a job outside [0, J), an unknown or dead agent,
    or a missing live agent raise ``ValueError`` naming the agent and key; the env is unchanged.
    Arrays of any real dtype, lists and torch tensors (detached) are accepted.

    ## Observation Space (Dict)
    Three float32 entries; R resources, B = broadcast_dim, D = id_dim, J jobs, K peer slots.
    K = num_peers (default num_agents - 1: everyone else, in slot order; a smaller K is a fresh
    uniform sample each step). With the defaults (R = 2, B = 6, D = 4, J = 2, N = 50):
    S = 20, P = 12, K = 49.

    `self`, Box(S,) with S = 2R + 2 + B + D + 2J:

    | Num | Observation | Min | Max |
    |---|---|---|---|
    | 0 .. R-1 | own holdings of each resource (after decay) | 0 | inf |
    | R | age / max_age | 0 | 1 |
    | R+1 | effort actually spent last step (after the age and input caps) | 0 | 1 |
    | R+2 .. 2R+1 | own utility weights (heritable tastes, sum 1) | 0 | 1 |
    | 2R+2 .. 2R+B+1 | own last broadcast | -1 | 1 |
    | 2R+B+2 .. 2R+B+D+1 | own id vector (random at birth, public) | -1 | 1 |
    | 2R+B+D+2 .. 2R+B+D+J+1 | sin of each job's season angle pi/2 * t / period + phase | -1 | 1 |
    | 2R+B+D+J+2 .. S-1 | cos of each job's season angle | -1 | 1 |

    `peers`, Box(K, P) with P = B + D + R; row k shows the peer in slot k (zeros in an empty slot):

    | Num | Observation | Min | Max |
    |---|---|---|---|
    | 0 .. B-1 | the peer's last broadcast (sent last step: a one-step delay) | -1 | 1 |
    | B .. B+D-1 | the peer's id vector | -1 | 1 |
    | B+D .. P-1 | the peer's holdings of each resource | 0 | inf |

    `peer_mask`, Box(0, 1, (K,)): 1 where slot k holds a live peer, else 0.

    Symbolic mode: every "last broadcast" slice above is [L * V] wide (B reads L * V) and holds the
    one-hot of the L tokens, token by token (column l * V + v is 1 when token l is symbol v), in [0, 1];
    all zeros before an agent's first message.

    With `private_signals=True` (docs/design.md section 11) `self` gains J columns at its end, the
    one-hot of the job in boom (scouts only; zeros for the others), and each `peers` row gains J
    columns between the id vector and the holdings, the peer's last job as a one-hot (zeros for a
    newborn): S = 2R + 2 + B + D + 3J, P = B + D + J + R, all in [0, 1].

    In a spatial world (`EconomyConfig.spatial`: world_width * world_height > 1 or a carrying_capacity,
    docs/design.md section 13) the action Dict has a sixth key `move`, Discrete(5): 0 stay, 1 north
    (y - 1), 2 south (y + 1), 3 west (x - 1), 4 east (x + 1); a move off the edge stays, a real move
    costs `migration_cost` of each holding. `self` ends (after any private-signal columns) with 2 + R
    columns in [0, 1]: the own region's x / (W - 1 or 1), y / (H - 1 or 1) and its last market prices
    (all zeros where no market cleared last step); peers are drawn among the live agents of the regions
    within `peer_radius` (padded, mask 0, when fewer than K); every agent's `infos` has `region`
    (g = y * W + x, where it ends the step).

    Holdings are unbounded above in the space; the economy refuses (NonFiniteStateError, nothing
    changed) a step whose holdings would exceed float32's range, so every observation is finite.

    ## Rewards
    prod_r (1 + c_r) ** w_r - 1 + rest_bonus * (1 - effort spent), with c the goods consumed this
    step and w the agent's heritable utility weights. A newborn's reward in its birth step is 0.0.

    ## Starting State
    `num_agents` founders `agent_0`.. with endowments uniform on [0, 2 * initial_holdings], Dirichlet(1)
    tastes, random ids, ages uniform on [0, max_age).

    ## Episode End
    An agent's life is its episode. It terminates when it dies (age >= max_age, or
    need . consumed < min_consumption): `terminations[a]` is True, `infos[a]["death_cause"]` is "age" or
    "starvation", and it leaves `agents`; its last observation has its own features at death and the
    peer slots of the row it held after the step (that row's newborn's sample when peers are
    sampled). In the same step a newborn `agent_<next k>` takes its place, present in all five
    dicts with reward 0.0 and `infos = {"born": True, "parents": (p1, p2), "generation": g, "slot": i}`
    (i: the row it took, the `slot_i` of the fixed-slot view, docs/design.md section 8).
    At `max_steps` every live agent is truncated and nobody is born.

    ## Arguments
    `config`: an EconomyConfig (default: the seed's economy); `scenario`: instead of `config`, a name in
    `homoecon_env.scenarios.SCENARIOS` whose economy is the base (docs/design.md section 9; giving both
    is a ValueError); `render_mode`: None, "rgb_array" (render()
    returns a frame) or "human" (every reset and step draws the frame in a matplotlib window; nothing
    is drawn when matplotlib's backend is not interactive, e.g. headless);
    `**overrides`: EconomyConfig fields applied on top of `config` or `scenario`, e.g. `num_agents=200`.

    ## Example
    >>> from homoecon_env import parallel_env
    >>> env = parallel_env(num_agents=4, max_steps=5)
    >>> observations, infos = env.reset(seed=42)
    >>> env.agents
    ['agent_0', 'agent_1', 'agent_2', 'agent_3']
    >>> observations["agent_0"]["self"].shape, observations["agent_0"]["peers"].shape  # (S,), (K, P)
    ((20,), (3, 12))
    >>> while env.agents:
    ...     actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    ...     observations, rewards, terminations, truncations, infos = env.step(actions)
    >>> env.economy.state.step, all(terminations[a] or truncations[a] for a in rewards)
    (5, True)
    >>> stats = env.last_stats  # the ledger of the last step, per good
    >>> stats["totals"].shape, stats["founder_endowment"].shape
    ((2,), (2,))

    ## Version History
    v0: first release. Since: `reset()` without a seed continues the generator (Gymnasium's rule);
    `last_stats` closes the goods ledger (`inputs_used`, `decayed`, `founder_endowment`).
    """

    metadata = {"name": "homoecon_v0", "render_modes": list(RenderModes.MODES), "is_parallelizable": True,
                "render_fps": RenderModes.FPS}

    def __init__(self, config: Optional[EconomyConfig] = None, render_mode: Optional[str] = None, *,
                 scenario: Optional[str] = None, **overrides):
        config = env_config(config, scenario, overrides)
        self.config = config
        self.render_mode = RenderModes.checked(render_mode)
        self._renderer = RenderModes(self.render_mode, self.metadata["render_fps"])
        self.economy = Economy(config)
        self.possible_agents = AgentNames(config.max_population_names)
        self.agents: list[str] = []
        self._slot_names: list[str] = []  # name of the agent in each slot

    # -- spaces -----------------------------------------------------------------------------
    # One object for every agent, as the contract requires; caching the bound method keeps it O(1)
    # even for millions of possible names (an lru_cache keyed by name would grow with the episode).
    @functools.cached_property
    def _observation_space(self) -> spaces.Dict:
        (self_low, self_high), (peer_low, peer_high) = observation_bounds(self.config)
        k = self.config.peers_observed
        return spaces.Dict({
            "self": spaces.Box(self_low.astype(np.float32), self_high.astype(np.float32), dtype=np.float32),
            "peers": spaces.Box(np.tile(peer_low, (k, 1)).astype(np.float32),
                                np.tile(peer_high, (k, 1)).astype(np.float32), dtype=np.float32),
            "peer_mask": spaces.Box(0.0, 1.0, (k,), dtype=np.float32),
        })

    @functools.cached_property
    def _action_space(self) -> spaces.Dict:
        return config_action_space(self.config)

    def observation_space(self, agent) -> spaces.Dict:
        """The observation space; MUST be (and is) the same object for every agent."""
        return self._observation_space

    def action_space(self, agent) -> spaces.Dict:
        """The action space; MUST be (and is) the same object for every agent."""
        return self._action_space

    @functools.cached_property
    def state_space(self) -> spaces.Box:
        return global_state_space(self.config)

    # -- episode ----------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        """Found a new population; everything after is a pure function of `seed` and the actions.

        ``seed``: an int in [0, 2**64 - 1]. Without one (as in Gymnasium) the first reset uses
        ``config.seed`` (OS entropy when None) and later resets continue the env's generator, so
        consecutive episodes differ. A bad seed raises ValueError naming it; nothing changes."""
        observation = self.economy.reset(seed)
        self._slot_names = [f"agent_{k}" for k in self.economy.state.agent_ids.tolist()]
        self.agents = list(self._slot_names)
        self._renderer.after_step(self.economy)
        infos = {a: {} for a in self.agents} if not self.config.spatial else \
            {a: {"region": g} for a, g in zip(self.agents, self.economy.state_arrays.region.tolist())}
        return self._observation_dict(observation, self.agents), infos

    def step(self, actions: Mapping):
        """Advance one step. Returns obs, rewards, terminations, truncations, infos keyed by the agents
        alive after the step plus those that died in it. Refused input leaves the env unchanged."""
        batched = self._actions_to_tensors(actions)
        out = self.economy.step(batched)
        dicts = self._step_dicts(out)
        self._renderer.after_step(self.economy)
        return dicts

    def _step_dicts(self, out: StepOutput):
        acting, state = self._slot_names, self.economy.state_arrays
        cause = out.death_cause.numpy()
        dead_slots = np.flatnonzero(cause).tolist()
        born_slots = np.flatnonzero(out.births.born.numpy()).tolist()
        new_names = list(acting)
        for slot, k in zip(born_slots, state.agent_ids[born_slots].tolist()):
            new_names[slot] = f"agent_{k}"
        observation = out.observation
        obs = self._observation_dict(observation, acting)
        rewards = dict(zip(acting, out.reward.tolist()))
        terminations = dict.fromkeys(acting, False)
        truncations = dict.fromkeys(acting, out.truncated)
        infos = {a: {} for a in acting}
        spatial = self.config.spatial
        if spatial:  # docs/design.md section 13: every agent's region (where it ended the step)
            infos = {a: {"region": g} for a, g in zip(acting, out.dying_state.region.tolist())}
        if dead_slots:
            terminal = self.economy.terminal_self_features(out).numpy()[dead_slots]
            for slot, features, code in zip(dead_slots, terminal, cause[dead_slots].tolist()):
                name = acting[slot]
                obs[name]["self"] = features
                terminations[name], truncations[name] = True, False
                infos[name] = {"death_cause": DEATH_CAUSES[code], **infos[name]}
        if born_slots:
            obs.update(self._observation_dict(observation, [new_names[s] for s in born_slots], born_slots))
            generation = state.generation[born_slots].tolist()
            parents = out.births.parent_slots.numpy()[born_slots].tolist()
            for slot, born_generation, parent_slots in zip(born_slots, generation, parents):
                name = new_names[slot]
                rewards[name] = 0.0
                terminations[name] = False
                truncations[name] = False
                infos[name] = {"born": True, "parents": tuple(acting[p] for p in parent_slots if p >= 0),
                               "generation": born_generation, "slot": slot}
                if spatial:
                    infos[name]["region"] = int(state.region[slot])
        self._slot_names = new_names
        self.agents = [] if out.truncated else (list(new_names) if state.alive.all() else
                                                [name for name, live in zip(new_names, state.alive.tolist()) if live])
        return obs, rewards, terminations, truncations, infos

    def _observation_dict(self, observation, names, slots=None) -> dict:
        """{name: {"self", "peers", "peer_mask"}} for the given slots (default: every slot), as rows of
        fresh arrays, so that a caller editing its observation in place cannot reach the economy."""
        parts = [observation.self_features.numpy(), observation.peers.numpy(), observation.peer_mask.numpy()]
        own, peers, mask = (part.copy() for part in parts) if slots is None else (part[slots] for part in parts)
        return {name: {"self": o, "peers": p, "peer_mask": m} for name, o, p, m in zip(names, own, peers, mask)}

    # -- input checks -------------------------------------------------------------------------
    def _actions_to_tensors(self, actions: Mapping) -> Actions:
        """Check the action dict (agents, keys, shapes) and stack it in slot order, as NumPy arrays."""
        if not self.agents:
            raise ValueError("no live agents: the episode is over (or reset() was not called); call reset()")
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict keyed by agent name, got {type(actions).__name__}")
        names = self._slot_names
        try:
            chosen = [actions[name] for name in names] \
                if len(actions) == len(names) == len(self.agents) else None
        except (KeyError, TypeError):
            chosen = None
        if chosen is None:
            self._check_names(actions)
            chosen = [actions[name] for name in names]
        return self._stacker.stack(chosen, names)

    @functools.cached_property
    def _stacker(self) -> DictActionStacker:
        return DictActionStacker(self._action_space)

    def _check_names(self, actions: Mapping) -> None:
        """ValueError naming the first unknown or dead agent, or the first live agent without an action."""
        live = set(self.agents)
        for name in actions:
            if name not in live:
                why = "is dead" if name in self.possible_agents and agent_number(name) < self.economy.state.next_id \
                    else "is not an agent of this episode"
                raise ValueError(f"{name}: {why}; actions are for live agents only ({len(live)} live)")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"{missing[0]}: no action given for this live agent "
                             f"({len(missing)} live agent(s) missing, e.g. {missing[:3]})")

    # -- global views -------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        """Global float32 state: per slot holdings, age/max_age, tastes, broadcast, effort, alive; then
        t/max_steps and the season features."""
        return global_state(self.economy)

    @property
    def last_stats(self) -> dict:
        """Economy-wide figures of the last step, for loggers (docs/design.md section 3): the goods
        ledger (totals, produced, inputs_used, consumed, decayed, lost, founder_endowment), prices,
        population and market figures; the keys are listed in `Economy.last_stats`."""
        return self.economy.last_stats

    def render(self):
        """rgb_array: an (H, W, 3) uint8 dashboard frame; human: shows it in a window (nothing when
        headless) and returns None; None when render_mode is None."""
        return self._renderer.render(self.economy)

    def close(self):
        self._renderer.close()


def config_action_space(config: EconomyConfig) -> spaces.Dict:
    """The Dict action space of one agent of ``config``: the broadcast is Box(-1, 1, (B,)), or in the
    symbolic mode MultiDiscrete([V] * L) (docs/design.md sections 3 and 11); a spatial world adds
    ``move``, Discrete(5) (section 13)."""
    moves = NUM_MOVES if config.spatial else None  # docs/design.md section 13: `move` only in a spatial world
    if config.symbolic:
        return dict_action_space(config.message_length, config.num_jobs, config.num_resources, config.vocab_size,
                                 moves)
    return dict_action_space(config.broadcast_dim, config.num_jobs, config.num_resources, num_moves=moves)


def observation_bounds(config: EconomyConfig):
    """((self_low, self_high), (peer_low, peer_high)) float64 bounds of one observation's own
    features [S] and of one peer row [P]; holdings are unbounded above (docs/design.md section 3).
    A message's columns are in [-1, 1], or in [0, 1] in the symbolic mode (a one-hot, section 11)."""
    nr, b, d, nj = config.num_resources, config.message_width, config.id_dim, config.num_jobs
    message_low = np.zeros(b) if config.symbolic else -np.ones(b)
    self_low = np.concatenate([np.zeros(nr), [0, 0], np.zeros(nr), message_low, -np.ones(d), -np.ones(2 * nj)])
    self_high = np.concatenate([np.full(nr, np.inf), [1, 1], np.ones(nr), np.ones(b), np.ones(d), np.ones(2 * nj)])
    peer_low = np.concatenate([message_low, -np.ones(d), np.zeros(nr)])
    peer_high = np.concatenate([np.ones(b), np.ones(d), np.full(nr, np.inf)])
    extra_self, extra_peer = signals.extra_dims(config)  # private signals: one-hots in [0, 1] (section 11)
    if extra_self or extra_peer:
        self_low, self_high = np.append(self_low, np.zeros(extra_self)), np.append(self_high, np.ones(extra_self))
        at = b + d  # the peers' last-job one-hot goes before their holdings (which stay last)
        peer_low, peer_high = np.insert(peer_low, at, np.zeros(extra_peer)), \
            np.insert(peer_high, at, np.ones(extra_peer))
    if config.spatial:  # the own region's x, y and last prices, all in [0, 1] (section 13)
        extra = 2 + nr
        self_low, self_high = np.append(self_low, np.zeros(extra)), np.append(self_high, np.ones(extra))
    return (self_low, self_high), (peer_low, peer_high)


def global_state_space(config: EconomyConfig) -> spaces.Box:
    """The Box of `global_state`."""
    per_agent = 2 * config.num_resources + config.message_width + 3 + (2 if config.spatial else 0)
    size = config.num_agents * per_agent + 1 + 2 * config.num_jobs
    return spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)


def global_state(economy: Economy) -> np.ndarray:
    """Global float32 state: per slot holdings, age/max_age, tastes, broadcast, effort, alive (and in a
    spatial world its region's x / (W - 1 or 1), y / (H - 1 or 1)); then t/max_steps and the season features."""
    s, config = economy.state_arrays, economy.config
    if s is None:
        raise ValueError("state() before reset()")
    columns = [s.holdings, (s.ages / config.max_age)[:, None], s.utility_weights, s.broadcast, s.effort[:, None],
               s.alive[:, None]]
    if config.spatial:
        columns.append(space.self_columns(s, economy.space, config.num_resources)[:, :2])
    per_agent = np.concatenate(columns, axis=1, dtype=np.float64)
    season = season_features(economy.jobs, s.step)
    return np.concatenate([per_agent.reshape(-1), [s.step / config.max_steps], season], dtype=np.float32)


def parallel_env(config: Optional[EconomyConfig] = None, render_mode: Optional[str] = None, *,
                 scenario: Optional[str] = None, **overrides) -> HomoEconEnv:
    """The ParallelEnv (all agents act at once); `scenario=NAME` starts from a registered economy."""
    return HomoEconEnv(config, render_mode=render_mode, scenario=scenario, **overrides)


def raw_env(config: Optional[EconomyConfig] = None, render_mode: Optional[str] = None, *,
            scenario: Optional[str] = None, **overrides):
    """The AEC version without wrappers."""
    return parallel_to_aec(parallel_env(config, render_mode=render_mode, scenario=scenario, **overrides))


def env(config: Optional[EconomyConfig] = None, render_mode: Optional[str] = None, *,
        scenario: Optional[str] = None, **overrides):
    """The AEC version with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(config, render_mode=render_mode, scenario=scenario, **overrides))
