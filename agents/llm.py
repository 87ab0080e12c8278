"""Language-model agents: a Learner whose policy is a language model (docs/design.md section 12).

Every step, for every slot it controls (`act`, or `act_rows` for some slots, which `agents.mixed`
uses), the learner renders the agent's observation as text (`agents.llm_text`: holdings, last market
prices, season, tastes, the messages and holdings of up to `llm_peers_shown` live peers, and the
agent's own last `llm_memory` rewards as its memory), sends all of the step's conversations to the
backend at once (`agents.llm_backends`: an OpenAI-compatible HTTP server, requests concurrent, or a
local transformers model, batched), and reads each reply as a JSON action, field by field.

Fallback (documented, per field): a field that is missing or fails its check takes the value of the
scripted heuristic (`agents.scripted`): job = the job in season (scaled by held inputs on supply
chains), effort = 1, trade_weights = own tastes, consume = 0.9 of every good, broadcast = zeros (the
symbolic mode: token 0s), move = stay. A reply with any problem, a failed request included, counts
as invalid.

Metrics, returned by `update` every step (TensorBoard tags ``learner/llm/...``): ``llm/invalid_rate``
(share of this step's replies with a problem), ``llm/error_rate`` (share of requests that failed:
refused, timed out, not a chat-completions response), ``llm/latency_s`` (mean seconds per request;
a local batch's time for each of its prompts), ``llm/prompt_tokens`` and ``llm/completion_tokens``
(means per request) and ``llm/agents`` (replies this step). `last_problems` keeps the step's problems
per slot for inspection.

It does not learn: the model's weights never change (in-context memory only). Its state is the reward
memory, the last prices, the step counter and `last_attention` (uniform over the peers shown); a
newborn starts with an empty memory. With temperature 0 (the default) replies are greedy, so a run
repeats given the same server and model.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from agents import llm_text
from agents.config import LearnerConfig
from agents.scripted import DEFAULT_EAT_FRACTION, ScriptedLearner
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput
from homoecon_env.core.lifecycle import Births

METRICS = ("invalid_rate", "error_rate", "latency_s", "prompt_tokens", "completion_tokens", "agents")


class LLMLearner:
    """Every slot's action from a language model's JSON reply (module docstring)."""

    def __init__(self, economy_config: EconomyConfig, learner_config: Optional[LearnerConfig] = None,
                 backend=None):
        self.economy_config = c = economy_config
        self.config = learner_config or LearnerConfig()
        self.schema = llm_text.ActionSchema.from_config(c)
        self.system = llm_text.system_prompt(self.schema)
        self.heuristic = ScriptedLearner(c, self.config)  # the fallback's job and tastes columns
        if backend is None:
            from agents.llm_backends import make_backend
            backend = make_backend(self.config)
        self.backend = backend
        n, r = c.num_agents, c.num_resources
        self.memory = torch.zeros(n, self.config.llm_memory, dtype=torch.float64)  # [N, M] last rewards, newest last
        self.memory_count = torch.zeros(n, dtype=torch.int64)  # [N] rewards remembered (<= M)
        self.prices: Optional[torch.Tensor] = None  # [R] the last market's prices
        self.calls = 0  # backend calls so far (seeds each call's sampling)
        self.last_attention = torch.zeros(n, c.peers_observed)  # [N, K]
        self.last_problems: dict[int, list] = {}
        self._step_stats: Optional[dict] = None
        self.deterministic = False  # greedy at temperature 0 already; kept for evaluate.py --deterministic
        self._r = r

    # -- rendering ----------------------------------------------------------------------------
    def _peers_shown(self, observation: Observation, rows: torch.Tensor) -> torch.Tensor:
        """[n, K] bool: the first `llm_peers_shown` live peers of each row, in slot order of the observation."""
        live = observation.peer_mask.index_select(0, rows) > 0  # [n, K]
        return live & (live.cumsum(dim=1) <= self.config.llm_peers_shown)

    def prompts(self, observation: Observation, rows: torch.Tensor) -> list:
        """The conversation (system + user message) of each row in ``rows``."""
        c, r = self.economy_config, self._r
        features = observation.self_features.index_select(0, rows).double().numpy()  # [n, S]
        peers = observation.peers.index_select(0, rows).double().numpy()  # [n, K, P]
        shown = self._peers_shown(observation, rows).numpy()
        live = (observation.peer_mask.index_select(0, rows) > 0).sum(dim=1).tolist()
        season = self.heuristic.job_scores(observation.self_features.index_select(0, rows)).double().numpy()
        start, stop = self.heuristic.tastes_columns
        prices = None if self.prices is None else self.prices.numpy()
        memory, counts = self.memory.index_select(0, rows).numpy(), self.memory_count.index_select(0, rows).tolist()
        width, size = c.message_width, self.config.llm_memory
        spatial = self.schema.spatial
        if spatial:  # self ends with x / (W - 1), y / (H - 1) and the own region's last prices [R]
            width_cells, height_cells = c.world_width, c.world_height
            x = (features[:, -r - 2] * max(width_cells - 1, 1)).round().astype(int)
            y = (features[:, -r - 1] * max(height_cells - 1, 1)).round().astype(int)
        conversations = []
        for i in range(len(features)):
            local = features[i, -r:] if spatial else None
            if spatial:
                prices = local if local.sum() > 0 else None  # zeros: no market in the region last step
            text = llm_text.render_observation(
                self.schema, holdings=features[i, :r], age=int(round(features[i, r] * c.max_age)), max_age=c.max_age,
                tastes=features[i, start:stop], season=season[i], prices=prices,
                rewards=memory[i, size - counts[i]:] if counts[i] else [],
                peer_messages=peers[i, shown[i], :width], peer_holdings=peers[i, shown[i], -r:], peers_live=live[i])
            if spatial:
                text = text.replace("\nLast market prices", f"\nYou live in column {x[i]} of {width_cells}, row "
                                    f"{y[i]} of {height_cells} (row 0 is north); prices are your region's.\n"
                                    "Last market prices", 1)
            conversations.append([{"role": "system", "content": self.system}, {"role": "user", "content": text}])
        return conversations

    # -- acting -------------------------------------------------------------------------------
    def fallback(self, observation: Observation, rows: torch.Tensor) -> dict:
        """The documented default action of each row in ``rows`` (module docstring), as [n, ...] tensors."""
        c = self.economy_config
        features = observation.self_features.index_select(0, rows)
        n = rows.numel()
        start, stop = self.heuristic.tastes_columns
        actions = {"broadcast": torch.zeros(n, c.message_length, dtype=torch.int64) if c.symbolic
                   else torch.zeros(n, c.broadcast_dim),
                   "job": self.heuristic.job_scores(features).argmax(dim=1),
                   "effort": torch.ones(n), "trade_weights": features[:, start:stop].clone(),
                   "consume": torch.full((n, c.num_resources), DEFAULT_EAT_FRACTION)}
        if self.schema.spatial:
            actions["move"] = torch.zeros(n, dtype=torch.int64)
        return actions

    def act(self, observation: Observation) -> Actions:
        n = observation.self_features.shape[0]
        return self.act_rows(observation, torch.arange(n))

    def act_rows(self, observation: Observation, rows: torch.Tensor) -> Actions:
        """Actions for the slots ``rows`` [n] only (rows of the returned Actions follow ``rows``)."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        actions = self.fallback(observation, rows)
        n = rows.numel()
        attention = self._peers_shown(observation, rows).float()
        attention = attention / attention.sum(dim=1, keepdim=True).clamp(min=1.0)
        self.last_attention = self.last_attention.index_copy(0, rows, attention)
        self.last_problems = {}
        if n == 0:
            self._step_stats = None
            return self._as_actions(actions)
        replies = self.backend.complete(self.prompts(observation, rows), self.calls)
        self.calls += 1
        invalid = errors = 0
        for i, reply in enumerate(replies):
            parsed = llm_text.parse_reply(self.schema, reply.text)
            problems = ([f"request failed: {reply.error}"] if reply.error else []) + parsed.problems
            errors += reply.error is not None
            if problems:
                invalid += 1
                self.last_problems[int(rows[i])] = problems
            for key, value in parsed.values.items():
                actions[key][i] = torch.as_tensor(value, dtype=actions[key].dtype)
        self._step_stats = {
            "invalid_rate": invalid / n, "error_rate": errors / n,
            "latency_s": sum(reply.latency_s for reply in replies) / n,
            "prompt_tokens": sum(reply.prompt_tokens for reply in replies) / n,
            "completion_tokens": sum(reply.completion_tokens for reply in replies) / n, "agents": float(n)}
        return self._as_actions(actions)

    @staticmethod
    def _as_actions(actions: dict) -> Actions:
        names = {field.name for field in dataclasses.fields(Actions)}
        return Actions(**{key: value for key, value in actions.items() if key in names})

    # -- the rest of the protocol ---------------------------------------------------------------
    def update(self, step: StepOutput) -> dict:
        """Remember each acting agent's reward (the dead forget), keep the market's prices; return the
        step's reply metrics (module docstring)."""
        if self.config.llm_memory:
            reward = step.reward.to(torch.float64)
            self.memory = torch.cat([self.memory[:, 1:], reward[:, None]], dim=1)
            self.memory_count = (self.memory_count + 1).clamp(max=self.config.llm_memory)
        prices = torch.as_tensor(np.asarray(step.trade.prices, dtype=np.float64))
        if prices.ndim == 2:  # regional markets (docs/design.md section 13): the mean over inhabited regions
            prices = prices.nanmean(dim=0)
        if bool(torch.isfinite(prices).all()):
            self.prices = prices
        stats, self._step_stats = self._step_stats, None
        return {} if stats is None else {f"llm/{key}": value for key, value in stats.items()}

    def on_births(self, births: Births) -> None:
        """A newborn remembers nothing."""
        rows = births.born.nonzero().view(-1)
        self.memory_count.index_fill_(0, rows, 0)
        self.memory.index_fill_(0, rows, 0.0)

    def state_dict(self) -> dict:
        return {"kind": "llm", "memory": self.memory.clone(), "memory_count": self.memory_count.clone(),
                "prices": None if self.prices is None else self.prices.clone(), "calls": self.calls,
                "last_attention": self.last_attention.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "llm":
            raise ValueError(f"learner state is for {state.get('kind')!r}, this learner is 'llm'")
        if tuple(state["memory"].shape) != tuple(self.memory.shape):
            raise ValueError(f"learner state's memory is {tuple(state['memory'].shape)}, expected "
                             f"{tuple(self.memory.shape)} (num_agents or llm_memory differ)")
        self.memory, self.memory_count = state["memory"].clone(), state["memory_count"].clone()
        self.prices = None if state["prices"] is None else state["prices"].clone()
        self.calls = int(state["calls"])
        self.last_attention = state["last_attention"].clone()

    def close(self) -> None:
        self.backend.close()
