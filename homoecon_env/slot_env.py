"""The fixed-slot view: agents `slot_0 .. slot_{N-1}` that never leave, with flat Box spaces
(docs/design.md section 8), for MARL libraries that need a fixed agent set (TorchRL, RLlib,
SuperSuit vector envs, BenchMARL).

The economy keeps N rows and refills a death in the same step, so this view is exact: a slot's
reward is that of the agent that acted in it, and its next observation is its occupant's (the
newborn's first one after a death). The named-agent env (`homoecon_env.parallel_env`) stays the
reference; both give the same trajectories from the same seed and actions.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Optional

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers

from homoecon_env.action_dicts import DictActionStacker
from homoecon_env.config import NUM_MOVES, EconomyConfig
from homoecon_env.core import Actions, Economy, signals
from homoecon_env.core.actions import ACTION_BOUNDS, REAL_KINDS, as_array, kind_name
from homoecon_env.env import config_action_space, global_state, global_state_space, observation_bounds
from homoecon_env.render import RenderModes
from homoecon_env.scenarios import env_config

ON_DEATH = ("continue", "terminate")
INFO_KEYS = ("agent_id", "actor_id", "generation", "born", "died", "death_cause")


def squash_holdings(holdings: np.ndarray) -> np.ndarray:
    """h -> h / (1 + h): holdings in [0, inf) shown in [0, 1] (1 only where float32 rounds up).
    Monotone and invertible (h = y / (1 - y)); 0.5 means one unit held."""
    return holdings / (1.0 + holdings)


def first_non_finite(fields: dict):
    """(name, row) of the first row holding a value that is not finite, in the first field (in order)
    that has one; None when every value of every [N, w] field is finite."""
    for name, value in fields.items():
        bad = ~np.isfinite(value).all(axis=1)
        if bad.any():
            return name, int(np.flatnonzero(bad)[0])
    return None


class FlatLayout:
    """Where each field sits in the slot view's vectors, and the finite Box bounds.

    Observation [S + K*P + K]: self [S] | peers [K, P] row by row | peer_mask [K], the named env's
    features (docs/design.md section 3) with every holdings entry squashed by `squash_holdings`.
    Action [B + J + 1 + 2R]: broadcast [B] | job scores [J] (clipped to [-1, 1], then argmax, ties
    to the lowest) |
    effort [1] | trade_weights [R] | consume [R].

    Symbolic broadcast mode (docs/design.md section 11): the broadcast part of the action is L * V
    token scores, position by position (columns l * V .. l * V + V - 1 score the V symbols of token
    l); token l = the argmax of its V scores clipped to [-1, 1], ties to the lowest symbol (the job's
    rule). In the observation every message slice is the [L * V] one-hot of the tokens (B reads L * V).

    Spatial world (docs/design.md section 13): the action ends with 5 move scores (stay, north, south,
    west, east; the argmax of the scores clipped to [-1, 1], ties to the lowest), so it is
    [B + J + 1 + 2R + 5]; `self` ends with the region's x, y and last prices (the named env's columns).
    """

    def __init__(self, config: EconomyConfig):
        r, b, d, j = config.num_resources, config.message_width, config.id_dim, config.num_jobs
        # symbolic mode: the L token positions and V symbols the broadcast scores [L * V] stand for
        self.tokens = (config.message_length, config.vocab_size) if config.symbolic else None
        self.peer_slots = config.peers_observed
        start = b + d + signals.extra_dims(config)[1]  # private signals put the last-job one-hot before holdings
        self.peer_holdings = slice(start, start + r)  # holdings columns of a peer row (the last R)
        self.num_resources = r
        self.action_fields = (("broadcast", b), ("job", j), ("effort", 1), ("trade_weights", r), ("consume", r))
        if config.spatial:  # docs/design.md section 13: 5 move scores at the end (argmax, ties to stay)
            self.action_fields += (("move", NUM_MOVES),)
        starts = np.cumsum([0] + [width for _, width in self.action_fields])
        self.action_slices = {name: slice(int(start), int(start) + width)
                              for (name, width), start in zip(self.action_fields, starts)}
        self.action_size = int(starts[-1])

    def dict_observation_space(self, config: EconomyConfig) -> spaces.Dict:
        """The named env's Dict observation space with holdings bounded to [0, 1]."""
        (self_low, self_high), (peer_low, peer_high) = observation_bounds(config)
        self_high[:self.num_resources] = 1.0
        peer_high[self.peer_holdings] = 1.0
        k = self.peer_slots
        return spaces.Dict({
            "self": spaces.Box(self_low.astype(np.float32), self_high.astype(np.float32), dtype=np.float32),
            "peers": spaces.Box(np.tile(peer_low, (k, 1)).astype(np.float32),
                                np.tile(peer_high, (k, 1)).astype(np.float32), dtype=np.float32),
            "peer_mask": spaces.Box(0.0, 1.0, (k,), dtype=np.float32),
        })

    def flat_observation_space(self, config: EconomyConfig) -> spaces.Box:
        parts = self.dict_observation_space(config)
        low = np.concatenate([parts[key].low.reshape(-1) for key in ("self", "peers", "peer_mask")])
        high = np.concatenate([parts[key].high.reshape(-1) for key in ("self", "peers", "peer_mask")])
        return spaces.Box(low, high, dtype=np.float32)

    def flat_action_space(self) -> spaces.Box:
        low = np.concatenate([np.full(width, ACTION_BOUNDS.get(name, (-1.0, 1.0))[0])
                              for name, width in self.action_fields])
        high = np.concatenate([np.full(width, ACTION_BOUNDS.get(name, (-1.0, 1.0))[1])
                               for name, width in self.action_fields])
        return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    def squashed(self, own: np.ndarray, peers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of own [N, S] and peers [N, K, P] features with holdings squashed."""
        own, peers = own.copy(), peers.copy()
        r = self.num_resources
        own[:, :r] = squash_holdings(own[:, :r].astype(np.float64))
        peers[:, :, self.peer_holdings] = squash_holdings(peers[:, :, self.peer_holdings].astype(np.float64))
        return own, peers

    def actions(self, matrix: np.ndarray, labels) -> Actions:
        """Split a float64 [N, A] matrix into Actions; ValueError naming the first slot and field
        that is not finite. The job is the argmax of the scores clipped to [-1, 1] (ties to the lowest
        job)."""
        part = {name: matrix[:, columns] for name, columns in self.action_slices.items()}
        if not np.isfinite(matrix).all():  # the common case ends in this one call
            name, row = first_non_finite(part)
            columns = self.action_slices[name]
            problem = "nan" if np.isnan(matrix[row, columns]).any() else "not finite"
            raise ValueError(f"{labels[row]}: action field '{name}' (columns {columns.start}.."
                             f"{columns.stop - 1} of the flat action) is {problem} "
                             f"(got {matrix[row, columns].tolist()}); expected finite real values")
        # clipped first, like every other field: scores [2, 3] are a tie at the bound, as a library's
        # clip-to-Box wrapper would make them, and go to the lowest job
        job = np.clip(part["job"], -1.0, 1.0).argmax(axis=1)
        broadcast = part["broadcast"]
        if self.tokens is not None:  # [N, L * V] scores -> [N, L] tokens, the job's rule per position
            broadcast = np.clip(broadcast, -1.0, 1.0).reshape(len(matrix), *self.tokens).argmax(axis=2)
        move = np.clip(part["move"], -1.0, 1.0).argmax(axis=1) if "move" in part else None
        return Actions(broadcast=broadcast, job=job, effort=part["effort"][:, 0],
                       trade_weights=part["trade_weights"], consume=part["consume"], move=move)


class SlotParallelEnv(ParallelEnv):
    """The economy seen as N fixed slots `slot_0 .. slot_{N-1}` (docs/design.md section 8).

    ## Spaces
    `flatten=True` (default): observation Box(S + K*P + K,) float32 with finite bounds and action
    Box(B + J + 1 + 2R,) float32, laid out as in `FlatLayout`. Holdings (unbounded in the economy)
    are shown as h / (1 + h) in [0, 1]. Finite actions outside the Box are clipped; the job is the
    argmax of the J scores. `flatten=False`: the named env's Dict spaces (holdings squashed alike).
    Symbolic broadcast mode: B reads L * V (token scores in the action, token one-hots in the
    observation, see `FlatLayout`); with `flatten=False` the broadcast is MultiDiscrete([V] * L).
    With the defaults (N = 50): observation (20 + 49 * 12 + 49,) = (657,), action (13,).

    ## Slots, deaths and births
    A slot's reward is that of the agent that acted in it (the dying one's on its death step); its
    next observation is its occupant's, the newborn's first after a death. `on_death="continue"`:
    deaths show only in infos; nobody terminates. `on_death="terminate"`: `terminations[slot]` is
    True on the step its occupant dies and the slot acts on with the newborn (the auto-reset
    convention of vector envs). At `max_steps` every slot is truncated and `agents` becomes [].

    ## Infos
    Every slot, at reset and every step, the same int keys: `agent_id` (k of `agent_k`, the
    occupant now), `actor_id` (who acted this step and earned the reward), `generation`, `born`
    (0/1), `died` (0/1), `death_cause` (0 none, 1 age, 2 starvation); in a spatial world also `region`
    (the slot's region g = y * W + x at the end of the step).

    ## Arguments
    `config` or `scenario` (a name in `homoecon_env.scenarios.SCENARIOS`; not both) and `**overrides`
    as in `homoecon_env.env.parallel_env`; `on_death`, `flatten` and `render_mode` as above.
    """

    metadata = {"name": "homoecon_slots_v0", "render_modes": list(RenderModes.MODES), "is_parallelizable": True,
                "render_fps": RenderModes.FPS}

    def __init__(self, config: Optional[EconomyConfig] = None, *, on_death: str = "continue", flatten: bool = True,
                 render_mode: Optional[str] = None, scenario: Optional[str] = None, **overrides):
        config = env_config(config, scenario, overrides)
        if on_death not in ON_DEATH:
            raise ValueError(f"on_death must be one of {ON_DEATH}, got {on_death!r}")
        if not isinstance(flatten, bool):
            raise ValueError(f"flatten must be True or False, got {flatten!r}")
        self.config = config
        self.render_mode = RenderModes.checked(render_mode)
        self.on_death, self.flatten = on_death, flatten
        self.economy = Economy(self.config)
        self.layout = FlatLayout(self.config)
        self.possible_agents = [f"slot_{i}" for i in range(self.config.num_agents)]
        self.agents: list[str] = []
        self.np_random = np.random.default_rng(self.config.seed)
        self._renderer = RenderModes(self.render_mode, self.metadata["render_fps"])

    # -- spaces: one object for every slot ------------------------------------------------------
    @functools.cached_property
    def _observation_space(self) -> spaces.Space:
        return self.layout.flat_observation_space(self.config) if self.flatten \
            else self.layout.dict_observation_space(self.config)

    @functools.cached_property
    def _action_space(self) -> spaces.Space:
        return self.layout.flat_action_space() if self.flatten else config_action_space(self.config)

    def observation_space(self, agent) -> spaces.Space:
        return self._observation_space

    def action_space(self, agent) -> spaces.Space:
        return self._action_space

    @functools.cached_property
    def state_space(self) -> spaces.Box:
        return global_state_space(self.config)

    @functools.cached_property
    def _stacker(self) -> DictActionStacker:
        return DictActionStacker(self._action_space)

    # -- episode --------------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        """Found a new population (the named env's reset, docs/design.md section 3)."""
        observation = self.economy.reset(seed)
        # for wrappers that draw their own randomness (e.g. SuperSuit's frame_skip); the economy
        # never reads it, so trajectories do not depend on it
        self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        state = self.economy.state_arrays
        n = self.config.num_agents
        zeros = np.zeros(n, dtype=np.int64)
        infos = self._infos(state.agent_ids, state.agent_ids, state.generation, zeros, zeros, state.region)
        observations = self._observations(observation.self_features.numpy(), observation)
        self._renderer.after_step(self.economy)
        return observations, infos

    def step(self, actions: Mapping):
        """Advance one step. Every slot acts every step; refused input leaves the env unchanged."""
        out = self.economy.step(self._actions(actions))
        state = self.economy.state_arrays
        cause = out.death_cause.numpy()
        died = cause != 0
        own = out.observation.self_features.numpy()
        unfilled = died & ~out.births.born.numpy()  # only on the max_steps step: nobody is born then
        if unfilled.any():
            own = np.where(unfilled[:, None], self.economy.terminal_self_features(out).numpy(), own)
        slots = self.possible_agents
        observations = self._observations(own, out.observation)
        rewards = dict(zip(slots, out.reward.tolist()))
        dying = died.tolist() if self.on_death == "terminate" else [False] * len(slots)
        terminations = dict(zip(slots, dying))
        truncations = dict.fromkeys(slots, out.truncated)
        infos = self._infos(state.agent_ids, out.acting_ids.numpy(), state.generation,
                            out.births.born.numpy().astype(np.int64), cause, state.region)
        if out.truncated:
            self.agents = []
        self._renderer.after_step(self.economy)
        return observations, rewards, terminations, truncations, infos

    def _observations(self, own: np.ndarray, observation) -> dict:
        """{slot: observation}, rows of fresh arrays (a caller editing one cannot reach the economy)."""
        own, peers = self.layout.squashed(own, observation.peers.numpy())
        mask = observation.peer_mask.numpy()
        if self.flatten:
            n = own.shape[0]
            flat = np.concatenate([own, peers.reshape(n, -1), mask], axis=1, dtype=np.float32)
            return dict(zip(self.possible_agents, flat))
        mask = mask.copy()
        return {slot: {"self": o, "peers": p, "peer_mask": m}
                for slot, o, p, m in zip(self.possible_agents, own, peers, mask)}

    def _infos(self, agent_ids, actor_ids, generation, born, cause, region) -> dict:
        columns = (agent_ids.tolist(), actor_ids.tolist(), generation.tolist(), born.tolist(),
                   (cause != 0).astype(np.int64).tolist(), cause.tolist())
        keys = INFO_KEYS
        if self.config.spatial:
            keys, columns = keys + ("region",), columns + (region.tolist(),)
        return {slot: dict(zip(keys, values)) for slot, *values in zip(self.possible_agents, *columns)}

    # -- input checks -------------------------------------------------------------------------
    def _actions(self, actions: Mapping) -> Actions:
        """Check the action dict (slots, shapes, finiteness) and stack it in slot order."""
        if not self.agents:
            raise ValueError("no slots to act: the episode is over (or reset() was not called); call reset()")
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict keyed by slot name, got {type(actions).__name__}")
        slots = self.possible_agents
        try:
            chosen = [actions[slot] for slot in slots] if len(actions) == len(slots) else None
        except (KeyError, TypeError):
            chosen = None
        if chosen is None:
            unknown = [name for name in actions if name not in set(slots)]
            if unknown:
                raise ValueError(f"{unknown[0]!r}: not a slot of this env (slot_0 .. slot_{len(slots) - 1})")
            missing = [slot for slot in slots if slot not in actions]
            raise ValueError(f"{missing[0]}: no action given ({len(missing)} slot(s) missing); every slot acts "
                             f"every step")
        if self.flatten:
            return self.layout.actions(self._flat_matrix(chosen), slots)
        batched = self._stacker.stack(chosen, slots)
        self._check_dict_values(batched)
        return batched

    def _flat_matrix(self, chosen: list) -> np.ndarray:
        """[N, A] float64 from one flat action per slot; ValueError naming the first bad slot."""
        size = self.layout.action_size
        if all(type(row) is np.ndarray and row.shape == (size,) and row.dtype.kind in "fiu" for row in chosen):
            return np.stack(chosen).astype(np.float64, copy=False)
        for slot, row in zip(self.possible_agents, chosen):
            try:
                array = as_array(row, "action")
            except ValueError as error:
                raise ValueError(f"{slot}: {error}") from None
            if array.shape != (size,):
                raise ValueError(f"{slot}: action has shape {array.shape}, expected ({size},): "
                                 f"{self._layout_text()}")
            if array.dtype.kind not in REAL_KINDS:
                raise ValueError(f"{slot}: action is not numeric ({kind_name(array)}); expected {size} real numbers")
        return np.stack([as_array(row, "action") for row in chosen]).astype(np.float64)

    def _check_dict_values(self, batched: Actions) -> None:
        """Finiteness and job range of stacked Dict actions, naming the slot (the economy would name
        the agent)."""
        n = len(self.possible_agents)
        values = {key: np.asarray(getattr(batched, key), dtype=np.float64).reshape(n, -1)
                  for key in ("broadcast", "effort", "trade_weights", "consume")}
        bad = first_non_finite(values)
        if bad is not None:
            key, row = bad
            raise ValueError(f"slot_{row}: action '{key}' is not finite (got {values[key][row].tolist()}); "
                             f"expected finite real values in {list(ACTION_BOUNDS[key])}")
        job = np.asarray(batched.job)
        bad = (job < 0) | (job >= self.config.num_jobs)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"slot_{row}: action 'job' is out of range (got {int(job[row])}); "
                             f"expected an int in [0, {self.config.num_jobs})")
        if batched.move is not None:
            move = np.asarray(batched.move)
            bad = (move < 0) | (move >= NUM_MOVES)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(f"slot_{row}: action 'move' is out of range (got {int(move[row])}); "
                                 f"expected an int in [0, {NUM_MOVES})")
        if self.config.symbolic:  # tokens [N, L]: ints (the stacker's checks), here their range
            tokens, vocab = np.asarray(batched.broadcast), self.config.vocab_size
            bad = ((tokens < 0) | (tokens >= vocab)).any(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(f"slot_{row}: action 'broadcast' is out of range (got {tokens[row].tolist()}); "
                                 f"expected {self.config.message_length} int token(s) in [0, {vocab})")

    def _layout_text(self) -> str:
        return " | ".join(f"{name} [{width}]" for name, width in self.layout.action_fields)

    # -- global views -------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        """The named env's global state (docs/design.md section 3)."""
        return global_state(self.economy)

    @property
    def last_stats(self) -> dict:
        """Economy-wide figures of the last step (the named env's `last_stats`)."""
        return self.economy.last_stats

    def render(self):
        """rgb_array: an (H, W, 3) uint8 frame; human: shows it in a window (none when headless)."""
        return self._renderer.render(self.economy)

    def close(self):
        self._renderer.close()


def slot_parallel_env(config: Optional[EconomyConfig] = None, *, on_death: str = "continue", flatten: bool = True,
                      render_mode: Optional[str] = None, scenario: Optional[str] = None,
                      **overrides) -> SlotParallelEnv:
    """The fixed-slot ParallelEnv (docs/design.md section 8); `scenario=NAME` as in `parallel_env`."""
    return SlotParallelEnv(config, on_death=on_death, flatten=flatten, render_mode=render_mode, scenario=scenario,
                           **overrides)


def slot_env(config: Optional[EconomyConfig] = None, *, on_death: str = "continue", flatten: bool = True,
             render_mode: Optional[str] = None, scenario: Optional[str] = None, **overrides):
    """The fixed-slot view as an AEC env, with PettingZoo's order-enforcing wrapper. on_death is
    "continue" only: the AEC cycle drops a terminated agent, so auto-reset slots ("terminate", a
    vector-env convention) exist in the parallel view alone."""
    if on_death != "continue":
        raise ValueError(f"on_death must be 'continue' for the AEC slot_env (got {on_death!r}); "
                         f"on_death='terminate' is the auto-reset convention of slot_parallel_env")
    return wrappers.OrderEnforcingWrapper(parallel_to_aec(slot_parallel_env(
        config, on_death=on_death, flatten=flatten, render_mode=render_mode, scenario=scenario, **overrides)))
