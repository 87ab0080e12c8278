"""Learners that live in the economy (DESIGN.md section 5).

`LEARNERS` maps a `--learner` name to a constructor `(EconomyConfig, LearnerConfig) -> Learner`;
`make_learner` looks one up. A new algorithm is one module, one registry line and one test.

`LearnerConfig` holds every learner hyper-parameter. Each field's ``metadata["help"]`` is the
one-line description scripts use as ``--help`` text:

    >>> from dataclasses import fields
    >>> {f.name: f.metadata["help"] for f in fields(LearnerConfig)}["gamma"]
    'discount factor of the return within an agent's life'
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, Optional

from agents.base import Learner, NonFiniteLossError
from homoecon_env.config import EconomyConfig


def _param(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class LearnerConfig:
    """Hyper-parameters shared by the learners. Invalid values raise ``ValueError`` naming the field."""

    hidden_size: int = _param(32, "width of the hidden layer of the broadcast, production, trading and consumption nets")
    attention_hidden_size: int = _param(16, "width of the social filter's hidden layer (its cost scales with peers x width)")
    learning_rate: float = _param(1e-2, "Adam step size of every agent's own optimizer")
    adam_beta1: float = _param(0.9, "Adam first-moment decay")
    adam_beta2: float = _param(0.999, "Adam second-moment decay")
    adam_eps: float = _param(1e-8, "Adam denominator epsilon")
    gamma: float = _param(0.9, "discount factor of the return within an agent's life")
    entropy_coef: float = _param(0.01, "weight of the entropy bonus in each agent's loss")
    update_every: int = _param(5, "env steps between REINFORCE updates (the rollout window)")
    max_grad_norm: float = _param(1.0, "per-agent gradient-norm clip (norm over all of one agent's parameters)")
    baseline_decay: float = _param(0.9, "decay of each agent's EMA baseline of returns")
    param_mutation: float = _param(0.01, "std of the Gaussian noise added to a newborn's inherited parameters")
    init_log_std: float = _param(-0.5, "initial log std of the Gaussian heads (broadcast, effort, trade, consume)")
    seed: int = _param(0, "seed of the learner's own torch.Generator (initial weights, sampling, inheritance)")

    def __post_init__(self):
        _check_int(self, "hidden_size", 1)
        _check_int(self, "attention_hidden_size", 1)
        _check_int(self, "update_every", 1)
        _check_int(self, "seed", 0)
        _check_float(self, "learning_rate", 0.0, math.inf, low_open=True)
        _check_float(self, "adam_beta1", 0.0, 1.0, high_open=True)
        _check_float(self, "adam_beta2", 0.0, 1.0, high_open=True)
        _check_float(self, "adam_eps", 0.0, math.inf, low_open=True)
        _check_float(self, "gamma", 0.0, 1.0)
        _check_float(self, "entropy_coef", 0.0, math.inf)
        _check_float(self, "max_grad_norm", 0.0, math.inf, low_open=True)
        _check_float(self, "baseline_decay", 0.0, 1.0, high_open=True)
        _check_float(self, "param_mutation", 0.0, math.inf)
        _check_float(self, "init_log_std", -10.0, 2.0)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> one-line description (for --help)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _check_int(config, name, low):
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_float(config, name, low, high, low_open=False, high_open=False):
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")


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
