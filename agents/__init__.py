"""Learners that live in the economy (docs/design.md section 5).

`LEARNERS` maps a `--learner` name to a constructor `(EconomyConfig, LearnerConfig) -> Learner`;
`make_learner` looks one up. A new algorithm is one module, one registry line and one test.

`LearnerConfig` (in `agents.config`) holds every learner hyper-parameter.
"""
from __future__ import annotations

from typing import Callable, Optional

from agents.base import Learner, NonFiniteLossError
from agents.config import LearnerConfig
from homoecon_env.config import EconomyConfig


def _reinforce(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.reinforce import ReinforceLearner
    return ReinforceLearner(economy_config, learner_config)


def _uniform_attention(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.baselines import uniform_attention_learner
    return uniform_attention_learner(economy_config, learner_config)


def _random(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.baselines import RandomLearner
    return RandomLearner(economy_config, learner_config)


LEARNERS: dict[str, Callable[[EconomyConfig, LearnerConfig], Learner]] = {
    "reinforce": _reinforce,  # independent per-agent REINFORCE with a learned social filter
    "random": _random,  # uniform random actions: the floor every learner must beat
    "uniform_attention": _uniform_attention,  # ablation: REINFORCE with attention = mean over live peers
}


def make_learner(name: str, economy_config: Optional[EconomyConfig] = None,
                 learner_config: Optional[LearnerConfig] = None) -> Learner:
    """Build the learner registered as `name` for an economy. Unknown names raise ValueError."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; choose one of {sorted(LEARNERS)}")
    return LEARNERS[name](economy_config or EconomyConfig(), learner_config or LearnerConfig())


__all__ = ["LEARNERS", "Learner", "LearnerConfig", "NonFiniteLossError", "make_learner"]
