"""Learners that live in the economy (docs/design.md section 5).

`LEARNERS` maps a `--learner` name to a constructor `(EconomyConfig, LearnerConfig) -> Learner`;
`make_learner` builds one. A new algorithm is one module, one registry line and one test.
Built in: ``reinforce`` (agents.reinforce), its ablation ``uniform_attention``, and two that never
learn: ``random`` (the floor) and ``scripted`` (agents.scripted: full effort on the job in season,
trade weights = own tastes, eat 90%; the bar a learner must reach) and its supply-chain variant
``scripted_chain`` (agents.scripted.ChainScriptedLearner: a planned division of labour along the chain)
and its spatial variant ``scripted_spatial`` (agents.scripted.SpatialScriptedLearner: the job worth most
where it works; migrates to a neighbouring region where that is worth clearly more). In a spatial world
(docs/design.md section 13) every built-in learner emits `Actions.move` (agents.spatial).
``llm`` (agents.llm: a language model's JSON reply per agent) and ``mixed`` (agents.mixed: fractions of
slots per learner, ``--mix llm=0.1,reinforce=0.9``; docs/design.md section 12).

A learner may also be named by its import path, ``package.module:ClassName`` (the attribute part may
be dotted, ``module:Outer.Inner``): any class implementing the `Learner` protocol whose constructor
takes ``(economy_config, learner_config)`` like the built-ins. `resolve_learner` is the one place
that turns a name into a constructor; it imports the named module (nothing else) and checks the
class, so a bad name fails early with one ValueError naming the ``learner`` field. The module is
looked up on ``sys.path`` like any import; train.py and evaluate.py put the current directory on it
(homoecon_lab.cli), so a researcher's ``mymodule.py`` where they run the command is found.

`LearnerConfig` (in `agents.config`) holds every learner hyper-parameter.
"""
from __future__ import annotations

import importlib
import inspect
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


def _ppo(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.ppo import PPOLearner
    return PPOLearner(economy_config, learner_config)


def _random(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.baselines import RandomLearner
    return RandomLearner(economy_config, learner_config)


def _scripted(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.scripted import ScriptedLearner
    return ScriptedLearner(economy_config, learner_config)


def _scripted_chain(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.scripted import ChainScriptedLearner
    return ChainScriptedLearner(economy_config, learner_config)


def _llm(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.llm import LLMLearner
    return LLMLearner(economy_config, learner_config)


def _mixed(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.mixed import MixedLearner
    return MixedLearner(economy_config, learner_config)


def _scripted_spatial(economy_config: EconomyConfig, learner_config: LearnerConfig) -> Learner:
    from agents.scripted import SpatialScriptedLearner
    return SpatialScriptedLearner(economy_config, learner_config)


LEARNERS: dict[str, Callable[[EconomyConfig, LearnerConfig], Learner]] = {
    "reinforce": _reinforce,  # independent per-agent REINFORCE with a learned social filter
    "random": _random,  # uniform random actions: the floor every learner must beat
    "uniform_attention": _uniform_attention,  # ablation: REINFORCE with attention = mean over live peers
    "scripted": _scripted,  # the one-line heuristic (job in season, own tastes, eat 90%): the bar to reach
    "ppo": _ppo,  # independent per-agent PPO (value head, GAE ending at deaths, clipped objective)
    "scripted_chain": _scripted_chain,  # supply chains: a balanced plan of jobs per slot, buy and keep the inputs
    "llm": _llm,  # a language model's JSON reply per agent (agents.llm; --llm-backend, --llm-model, --llm-base-url)
    "mixed": _mixed,  # fractions of slots per learner (agents.mixed; --mix llm=0.1,reinforce=0.9)
    "scripted_spatial": _scripted_spatial,  # spatial worlds: the job worth most here, move where it is worth more
}

# The protocol's methods, read from the protocol itself so the check follows it.
LEARNER_METHODS = tuple(name for name, value in vars(Learner).items() if callable(value) and not name.startswith("_"))


def is_import_path(name: str) -> bool:
    """True when ``name`` is meant as ``module:ClassName`` rather than a name in LEARNERS."""
    return isinstance(name, str) and ":" in name


def _dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def resolve_learner(name: str) -> Callable[[EconomyConfig, LearnerConfig], Learner]:
    """The constructor ``(EconomyConfig, LearnerConfig) -> Learner`` that ``name`` stands for.

    ``name`` is a key of LEARNERS or an import path ``package.module:ClassName``. An import path is
    imported (only that module) and checked: a class, every Learner method present, a constructor
    taking two positional arguments. Anything wrong raises one ValueError that starts with
    ``learner`` and says what is wrong (the ImportError's message included).
    """
    if not isinstance(name, str):
        raise ValueError(f"learner must be a string (a name in {sorted(LEARNERS)} or 'package.module:ClassName'), "
                         f"got {type(name).__name__}")
    if name in LEARNERS:
        return LEARNERS[name]
    if ":" not in name:
        hint = ""
        if "." in name and _dotted(name):
            module, _, attribute = name.rpartition(".")
            hint = f"; an import path separates module and class with a colon: '{module}:{attribute}'"
        raise ValueError(f"learner {name!r} is not a name in {sorted(LEARNERS)} nor an import path "
                         f"'package.module:ClassName' (no ':'){hint}")
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"learner {name!r}: an import path needs a module and a class, 'package.module:ClassName'; "
                         f"the {'module' if not module_name else 'class'} part is empty")
    if not _dotted(module_name) or not _dotted(attribute):
        bad = "module" if not _dotted(module_name) else "class"
        raise ValueError(f"learner {name!r}: the {bad} part {module_name if bad == 'module' else attribute!r} is not "
                         "a dotted Python name; expected 'package.module:ClassName'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"learner {name!r}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
                         "it must be importable from the current directory, PYTHONPATH or an installed "
                         "package") from None
    except Exception as error:  # noqa: BLE001 - the module's own code failed: one message, not a traceback
        raise ValueError(f"learner {name!r}: importing module {module_name!r} failed "
                         f"({type(error).__name__}: {error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"learner {name!r}: module {module_name!r} ({getattr(target, '__file__', None)}) "
                             f"has no attribute {attribute!r}")
        target = getattr(target, part)
    if not isinstance(target, type):
        raise ValueError(f"learner {name!r}: {attribute!r} is not a class but a {type(target).__name__} object; "
                         "expected a class implementing agents.base.Learner")
    missing = [method for method in LEARNER_METHODS if not callable(getattr(target, method, None))]
    if missing:
        raise ValueError(f"learner {name!r}: class {attribute!r} does not implement the Learner protocol "
                         f"(agents.base.Learner): missing methods {missing}")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (a C type): the call will tell
        signature = None
    if signature is not None:
        try:
            signature.bind(EconomyConfig, LearnerConfig)
        except TypeError as error:
            raise ValueError(f"learner {name!r}: class {attribute!r} must be built as cls(economy_config, "
                             f"learner_config), but its constructor is {attribute}{signature} ({error})") from None
    return target


def make_learner(name: str, economy_config: Optional[EconomyConfig] = None,
                 learner_config: Optional[LearnerConfig] = None) -> Learner:
    """Build the learner ``name`` (a LEARNERS key or ``module:ClassName``) for an economy.

    A name that does not resolve raises ValueError (see `resolve_learner`)."""
    return resolve_learner(name)(economy_config or EconomyConfig(), learner_config or LearnerConfig())


__all__ = ["LEARNERS", "LEARNER_METHODS", "Learner", "LearnerConfig", "NonFiniteLossError", "is_import_path",
           "make_learner", "resolve_learner"]
