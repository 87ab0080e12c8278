"""The Learner protocol: what train.py and evaluate.py need from any algorithm (docs/design.md section 5).

A learner controls every slot of a batched `homoecon_env.core.Economy` at once: one tensor row per
agent. The loop is

    observation = economy.reset(seed)
    while not economy.done:
        actions = learner.act(observation)          # Actions, one row per slot
        out = economy.step(actions)                 # StepOutput
        metrics = learner.update(out)               # record rewards / deaths; learn when due
        learner.on_births(out.births)               # newborn slots: inherit from parents
        observation = out.observation

A slot whose agent died is reused by the newborn that `on_births` announces; the name is never reused
(the env's `agent_<k>` ids live in `out.acting_ids` and `economy.state.agent_ids`).

A learner may also offer `driving_actions(actions) -> Actions`: what a *learning* step hands the economy in
place of its own actions (a reference's warm start, agents.reference). The scripts' loops go through
`executed_actions` when they learn; frozen rollouts execute the learner's own actions.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from homoecon_env.core import Actions, Observation, StepOutput
from homoecon_env.core.lifecycle import Births


@runtime_checkable
class Learner(Protocol):
    """Independent per-agent learners, computed batched over slots."""

    def act(self, observation: Observation) -> Actions:
        """Actions for every slot ([N, ...] tensors) given the batched observation."""

    def update(self, step: StepOutput) -> dict:
        """Take in one step's rewards and deaths; learn when due. Returns scalar metrics
        (e.g. {"loss": ..., "entropy": ..., "grad_norm": ...}) on steps that learned, else {}."""

    def on_births(self, births: Births) -> None:
        """Give each newborn slot its networks (from `births.parent_slots`) and fresh optimizer state."""

    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly (parameters, optimizer state, buffers, RNG), as plain
        data only: dict (str keys) / list / tuple / str / int / float / bool / None / torch.Tensor, which
        `agents.checkpoint` saves and `torch.load(weights_only=True)` reads. It may return live tensors
        (no copies): a checkpoint writes them at once."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


def executed_actions(learner, actions: Actions) -> Actions:
    """The actions a learning step executes: ``actions`` (from ``learner.act``), or the ones the learner's
    optional `driving_actions` returns for them."""
    drive = getattr(learner, "driving_actions", None)
    return actions if drive is None else drive(actions)


class NonFiniteLossError(ValueError):
    """A learner diverged; the message names the agent(s). Raised when a loss or gradient is NaN or
    inf (before any weight changes), when an optimizer step leaves a parameter NaN or inf, and when
    `act` would emit a non-finite action (weights huge but finite give NaN in the forward pass)."""
