"""LearnerConfig: every learner hyper-parameter, frozen and validated (docs/design.md section 5).

Each field's ``metadata["help"]`` is the one-line description the scripts use as ``--help`` text:

    >>> from dataclasses import fields
    >>> {f.name: f.metadata["help"] for f in fields(LearnerConfig)}["gamma"]
    'discount factor of the return within an agent's life'

Its own module, so that `agents/__init__.py` (the registry) and the learners import it without a cycle.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Literal

import torch

from homoecon_env.validation import check_float, check_int

INHERITANCE_MODES = ("genetic", "cultural", "none")  # docs/design.md section 9
LEARNER_DTYPES = ("float32", "float64")  # LearnerConfig.dtype: the learners' parameters, optimizer state, activations
LLM_BACKENDS = ("http", "transformers")  # docs/design.md section 12 (agents.llm_backends)
REFERENCE_POLICIES = ("none", "scripted", "scripted_chain")  # LearnerConfig.reference (agents.reference.REFERENCES)


def check_device_name(device) -> None:
    """ValueError naming ``device`` unless it is "cpu", "cuda" or "cuda:N" (N a non-negative int)."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:(0|[1-9][0-9]*))?", device):
        raise ValueError(f"device must be cpu, cuda or cuda:N (N = 0, 1, ...), got {device!r}")


def learner_device(device: str) -> torch.device:
    """The torch.device a learner's tensors live on, for a checked `LearnerConfig.device`. ValueError naming
    ``device`` when CUDA is asked for and torch has none here (or not that many devices)."""
    check_device_name(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch.cuda.is_available() is False on this machine (torch "
                             f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return torch.device(device)


def _param(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class LearnerConfig:
    """Hyper-parameters shared by the learners. Invalid values raise ``ValueError`` naming the field."""

    hidden_size: int = _param(
        32, "width of the hidden layer of the broadcast, production, trading and consumption nets")
    attention_hidden_size: int = _param(
        16, "width of the social filter's hidden layer (its cost scales with peers x width)")
    learning_rate: float = _param(1e-2, "Adam step size of every agent's own optimizer")
    adam_beta1: float = _param(0.9, "Adam first-moment decay")
    adam_beta2: float = _param(0.999, "Adam second-moment decay")
    adam_eps: float = _param(1e-8, "Adam denominator epsilon")
    gamma: float = _param(0.9, "discount factor of the return within an agent's life")
    entropy_coef: float = _param(0.01, "weight of the entropy bonus in each agent's loss (REINFORCE; PPO's is "
                                       "ppo_entropy_coef)")
    update_every: int = _param(5, "env steps between REINFORCE updates (the rollout window)")
    max_grad_norm: float = _param(1.0, "per-agent gradient-norm clip (norm over all of one agent's parameters)")
    baseline_decay: float = _param(0.9, "decay of each agent's EMA baseline of returns")
    param_mutation: float = _param(0.01, "std of the Gaussian noise added to a newborn's inherited parameters")
    init_log_std: float = _param(-0.5, "initial log std of the Gaussian heads (broadcast, effort, trade, consume)")
    seed: int = _param(0, "seed of the learner's own torch.Generator (initial weights, sampling, inheritance)")
    inheritance: Literal["genetic", "cultural", "none"] = _param(
        "genetic", "what a newborn's networks start from: genetic (crossover + mutation of its two parents'), "
        "cultural (an exact copy of a living teacher's, drawn in proportion to wealth) or none (fresh networks)")
    # Learning fixes found on the positive control (docs/design.md section 11); off by default, which
    # keeps every existing learner bit-for-bit
    inherit_optimizer: bool = _param(
        False, "a newborn's optimizer state is its parents' (the mean of their Adam moments, the larger step "
               "count), not a fresh one")
    horizon_baseline: bool = _param(
        False, "REINFORCE's baseline at window step t is the agent's mean reward per step times the discounted "
               "steps left in the window, not one mean window return for every step")
    mean_context: bool = _param(
        False, "the heads read the plain mean of the live peers' features beside the social filter's context, so "
               "the filter can only add to uniform pooling (uniform_attention, whose context is that mean, ignores it)")
    attention_sink: bool = _param(
        False, "the social filter may attend to nobody: a fixed score of 0 beside the peers' takes the rest of the "
               "softmax mass, so an agent's own features can turn listening down (the context is then a partial "
               "sum of the peers' features)")
    # Where the network learners (reinforce, uniform_attention, ppo) keep their tensors; the economy stays on the
    # CPU. The other learners run on the CPU whatever these say (docs/design.md section 5)
    device: str = _param(
        "cpu", "where reinforce, uniform_attention and ppo keep parameters, optimizer state and window: cpu, cuda "
               "or cuda:N (the economy stays on the CPU; observations cross once a step, actions once back; "
               "the other learners run on the CPU)")
    dtype: Literal["float32", "float64"] = _param(
        "float32", "float type of those learners' parameters, optimizer state, window and activations (float64: "
                   "results equal across devices within rounding)")
    # REINFORCE beside a hand-written reference policy (agents.reference; docs/design.md section 9)
    reference: Literal["none", "scripted", "scripted_chain"] = _param(
        "none", "reinforce and uniform_attention: a hand-written policy to learn beside (agents.reference): "
                "scripted (the season heuristic) or scripted_chain (the supply-chain plan, roles by public id); "
                "none learns alone")
    reference_steps: int = _param(
        0, "with a reference: the warm start, the learner's first steps, in which the reference acts and the "
           "update clones it (advantage 1 on its actions)")
    reference_coef: float = _param(
        0.0, "with a reference: lambda, the weight of each agent's cloning loss on the reference's actions beside "
             "its REINFORCE loss after the warm start (0: none)")
    reference_rows: int = _param(
        0, "with a reference: each agent also clones it on this many windows of the population per update (a "
           "random permutation of the slots each), so that "
           "every network learns the reference's whole map (what a newborn inherits); at most 8,192 agents")
    # PPO only (agents.ppo); the other learners ignore these
    clip_epsilon: float = _param(0.2, "PPO: clip range of the probability ratio in the surrogate objective")
    gae_lambda: float = _param(0.95, "PPO: lambda of generalized advantage estimation (0: one-step TD, 1: returns)")
    ppo_epochs: int = _param(4, "PPO: optimizer steps per agent over each rollout window")
    value_coef: float = _param(0.5, "PPO: weight of the value head's squared error in each agent's loss")
    ppo_entropy_coef: float = _param(
        0.001, "PPO: weight of the entropy bonus in each agent's loss (at 0.01 the bonus outweighs the small "
               "advantages and drives every log std to its clamp at 2, where it gets no gradient)")
    # Language-model agents (agents.llm, docs/design.md section 12) and mixed populations (agents.mixed);
    # the other learners ignore these
    llm_backend: Literal["http", "transformers"] = _param(
        "http", "llm: where replies come from: http (an OpenAI-compatible chat-completions server at "
                "--llm-base-url: vLLM, llama.cpp, Ollama) or transformers (a local model, the [llm] extra)")
    llm_base_url: str = _param("http://127.0.0.1:8000/v1", "llm: base URL of the chat-completions server "
                                                           "(requests go to <url>/chat/completions)")
    llm_model: str = _param(
        "tiny-random", "llm: the model: its name on the server (http), or a local folder with a transformers "
                       "model and tokenizer; tiny-random is a tiny random model built offline (agents.llm_tiny)")
    llm_max_tokens: int = _param(96, "llm: most tokens generated per reply")
    llm_temperature: float = _param(0.0, "llm: sampling temperature (0: greedy, reproducible)")
    llm_timeout_s: float = _param(30.0, "llm: seconds before an HTTP request is given up (the agent falls back)")
    llm_concurrency: int = _param(16, "llm: HTTP requests in flight at once, or prompts per local generation batch")
    llm_memory: int = _param(5, "llm: an agent's last rewards shown in its prompt (its memory)")
    llm_peers_shown: int = _param(5, "llm: live peers whose message and holdings the prompt lists")
    mix: str = _param("llm=0.1,reinforce=0.9", "mixed: fractions of slots per learner, learner=fraction,... "
                                               "(sum 1; newborns take their first parent's learner)")

    def __post_init__(self):
        for name in ("inherit_optimizer", "horizon_baseline", "attention_sink", "mean_context"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_device_name(self.device)
        if self.dtype not in LEARNER_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(LEARNER_DTYPES)}, got {self.dtype!r}")
        check_int("hidden_size", self.hidden_size, 1)
        check_int("attention_hidden_size", self.attention_hidden_size, 1)
        check_int("update_every", self.update_every, 1)
        check_int("seed", self.seed, 0)
        check_int("ppo_epochs", self.ppo_epochs, 1)
        if self.inheritance not in INHERITANCE_MODES:
            raise ValueError(f"inheritance must be one of {', '.join(INHERITANCE_MODES)}, got {self.inheritance!r}")
        if self.reference not in REFERENCE_POLICIES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_POLICIES)}, got {self.reference!r}")
        check_int("reference_steps", self.reference_steps, 0)
        check_float("reference_coef", self.reference_coef, 0.0, math.inf)
        check_int("reference_rows", self.reference_rows, 0)
        if self.reference == "none":
            for name in ("reference_steps", "reference_coef", "reference_rows"):
                if getattr(self, name):
                    raise ValueError(f"{name} is {getattr(self, name)!r} but reference is 'none': name the reference "
                                     f"policy ({', '.join(REFERENCE_POLICIES[1:])}) or set {name} to 0")
        elif not (self.reference_steps or self.reference_coef):
            raise ValueError(f"reference is {self.reference!r} but reference_steps and reference_coef are both 0: "
                             "give a warm start, an anchor or both")
        check_float("learning_rate", self.learning_rate, 0.0, math.inf, low_open=True)
        check_float("adam_beta1", self.adam_beta1, 0.0, 1.0, high_open=True)
        check_float("adam_beta2", self.adam_beta2, 0.0, 1.0, high_open=True)
        check_float("adam_eps", self.adam_eps, 0.0, math.inf, low_open=True)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("entropy_coef", self.entropy_coef, 0.0, math.inf)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, math.inf, low_open=True)
        check_float("baseline_decay", self.baseline_decay, 0.0, 1.0, high_open=True)
        check_float("param_mutation", self.param_mutation, 0.0, math.inf)
        check_float("init_log_std", self.init_log_std, -10.0, 2.0)
        check_float("clip_epsilon", self.clip_epsilon, 0.0, 1.0, low_open=True, high_open=True)
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_float("value_coef", self.value_coef, 0.0, math.inf)
        check_float("ppo_entropy_coef", self.ppo_entropy_coef, 0.0, math.inf)
        if self.llm_backend not in LLM_BACKENDS:
            raise ValueError(f"llm_backend must be one of {', '.join(LLM_BACKENDS)}, got {self.llm_backend!r}")
        for name in ("llm_base_url", "llm_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not self.llm_base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm_base_url must start with http:// or https://, got {self.llm_base_url!r}")
        check_int("llm_max_tokens", self.llm_max_tokens, 1)
        check_float("llm_temperature", self.llm_temperature, 0.0, 10.0)
        check_float("llm_timeout_s", self.llm_timeout_s, 0.0, 3600.0, low_open=True)
        check_int("llm_concurrency", self.llm_concurrency, 1)
        check_int("llm_memory", self.llm_memory, 0)
        check_int("llm_peers_shown", self.llm_peers_shown, 0)
        if not isinstance(self.mix, str):
            raise ValueError(f"mix must be a string such as 'llm=0.1,reinforce=0.9', got {self.mix!r}")
        from agents.mixed import parse_mix
        parse_mix(self.mix)  # ValueError naming mix

    @property
    def torch_dtype(self) -> torch.dtype:
        """`dtype` as a torch dtype."""
        return getattr(torch, self.dtype)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> one-line description (for --help)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}
