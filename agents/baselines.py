"""Baselines: uniform random actions, and the uniform-attention ablation of REINFORCE (docs/design.md section 5).

`RandomLearner` is the floor any learner must beat: every action drawn uniformly from its space
with the learner's own generator. `uniform_attention_learner` is `ReinforceLearner` with the learned
social filter replaced by a plain mean over live peers, everything else identical, so comparing the
two measures what learned attention buys.
"""
from __future__ import annotations

import torch

from homoecon_env.config import NUM_MOVES, EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput
from homoecon_env.core.lifecycle import Births


def uniform_attention_weights(peer_mask: torch.Tensor) -> torch.Tensor:
    """[..., K] weights 1 / (live peers) on live slots, 0 on masked ones (all zero when no peer is live)."""
    return peer_mask / peer_mask.sum(dim=-1, keepdim=True).clamp(min=1.0)


class RandomLearner:
    """Every slot acts uniformly at random; never learns.

    broadcast ~ U[-1, 1]^B (symbolic mode: L tokens ~ U{0..V-1}), job ~ U{0..J-1}, effort ~ U[0, 1],
    trade_weights ~ U[0, 1]^R, consume ~ U[0, 1]^R, in a spatial world move ~ U{0..4},
    all from the learner's own generator seeded by `LearnerConfig.seed`.
    `last_attention` is uniform over live peers (the learner ignores its peers).
    """

    def __init__(self, economy_config: EconomyConfig, learner_config=None):
        from agents.config import LearnerConfig
        self.economy_config = economy_config
        self.config = learner_config or LearnerConfig()
        self.generator = torch.Generator().manual_seed(self.config.seed)
        n, k = economy_config.num_agents, economy_config.peers_observed
        self.last_attention = torch.zeros(n, k)  # [N, K]

    def act(self, observation: Observation) -> Actions:
        n = observation.self_features.shape[0]
        c, g = self.economy_config, self.generator
        self.last_attention = uniform_attention_weights(observation.peer_mask)
        return Actions(
            # [N, B] in [-1, 1]; symbolic mode: [N, L] tokens uniform on {0..V-1}
            broadcast=torch.randint(0, c.vocab_size, (n, c.message_length), generator=g) if c.symbolic
            else torch.rand(n, c.broadcast_dim, generator=g) * 2 - 1,
            job=torch.randint(0, c.num_jobs, (n,), generator=g),  # [N]
            effort=torch.rand(n, generator=g),  # [N]
            trade_weights=torch.rand(n, c.num_resources, generator=g),  # [N, R]
            consume=torch.rand(n, c.num_resources, generator=g),  # [N, R]
            # [N] uniform over stay and the 4 neighbours in a spatial world (drawn last; None elsewhere)
            move=torch.randint(0, NUM_MOVES, (n,), generator=g) if c.spatial else None,
        )

    def update(self, step: StepOutput) -> dict:
        return {}

    def on_births(self, births: Births) -> None:
        pass

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "last_attention": self.last_attention.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.last_attention = state["last_attention"].clone()


def uniform_attention_learner(economy_config: EconomyConfig, learner_config=None):
    """ReinforceLearner whose social filter is a plain mean over live peers (the ablation)."""
    from agents.reinforce import ReinforceLearner
    return ReinforceLearner(economy_config, learner_config, uniform_attention=True)
