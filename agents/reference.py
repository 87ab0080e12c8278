"""Learning beside a reference policy: a warm start that clones it, then an anchor towards it (issue 16).

`LearnerConfig.reference` names a hand-written policy (`REFERENCES`) and three numbers say how REINFORCE
learns from it (docs/design.md section 9, "Learners beside a reference"). At every step `act` asks the
reference what it would do in each agent's place (`record`), and the update adds, per agent, a
behaviour-cloning loss on those actions at the agent's states:

- ``reference_steps`` K, the warm start: on the learner's first K steps the reference drives the economy (the
  scripts execute `driving_actions`, `agents.base.executed_actions`, while they learn) and the update is
  cloning alone, weight 1, the REINFORCE term dropped (advantages 0):
      loss_i = -mean_t [log pi_i(a_ref_it) + entropy_coef H_it]
- ``reference_coef`` lambda, the anchor: afterwards the learner acts itself and the cloning loss on the states
  it visits (DAgger's data) joins REINFORCE's with weight lambda:
      loss_i = -mean_t [A_it log pi_i(a_it) + entropy_coef H_it + lambda log pi_i(a_ref_it)]
  a pull towards the reference that independent gradient noise cannot walk away from (as KL-regularised
  play towards an imitation policy keeps human conventions in multi-agent games; piKL, Jacob et al. 2022).
- ``reference_rows`` M: each agent also clones the reference on M windows of the population drawn at random
  (one permutation of the slots per row, so now and then its own again), with the same total weight as its
  own (1 in the warm start, lambda after). A network then learns the reference's whole map from states to
  actions, not only its own corner: with lives of 10 steps a newborn inherits a parent's networks and must
  play its own role.

`act` always returns the learner's own actions, so a frozen or deterministic rollout shows its own policy.
Nothing here runs without a reference: a learner without one draws and computes what it did before.
"""
from __future__ import annotations

from typing import Callable

import torch

from agents.baselines import uniform_attention_weights
from agents.networks import MASKED_SCORE, attention_weights, filter_hidden, relu_scores
from agents.policy_gradient import policy_gradient
from agents.scripted import ChainScriptedLearner, ScriptedLearner
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions

EFFORT_CLIP = 0.02  # an effort of 1 is cloned as sigmoid(u) = 0.98: a finite pre-image
SHARE_CLIP = 1e-3  # trade shares, eaten fractions and broadcasts are cloned within 1e-3 of their bounds

# name -> constructor of the reference policy; each acts from the observation alone (a network can clone it)
REFERENCES: dict[str, Callable[[EconomyConfig], object]] = {
    "scripted": lambda config: ScriptedLearner(config),  # the season heuristic (every scenario)
    # supply chains: the balanced plan, roles cut by the first public id coordinate instead of the slot
    "scripted_chain": lambda config: ChainScriptedLearner(config, roles="id"),
}


def check_reference(config, economy: EconomyConfig, max_rows_agents: int) -> None:
    """ValueError naming the field when `config.reference` cannot serve this economy: the references have no
    tokens or moves (symbolic broadcasts, spatial worlds), and `reference_rows` needs at most
    ``max_rows_agents`` agents (one block per update)."""
    if config.reference == "none":
        return
    why = "a symbolic broadcast" if economy.symbolic else "a spatial world" if economy.spatial else None
    if why:
        raise ValueError(f"reference: {config.reference!r} cannot be cloned in {why} (the reference policies have "
                         "no tokens or moves); use reference none")
    if config.reference_rows and economy.num_agents > max_rows_agents:
        raise ValueError(f"reference_rows: {config.reference_rows} needs at most {max_rows_agents} agents (one block "
                         f"per update), got {economy.num_agents}; use reference_rows 0")


def reference_pre_images(actions: Actions, head_slices: dict, gaussian_dim: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N, G] the Gaussian pre-images (in ``dtype``) whose squashing gives `actions` (clipped to finite values):
    atanh of the broadcast, logit of the effort and of the eaten fractions, log(w_k / w_R) of the trade shares
    (the learner's last trade logit is fixed at 0); `head_slices` places them in the learner's G layout."""
    def logit(x, clip):
        x = x.to(dtype).clamp(clip, 1 - clip)
        return torch.log(x) - torch.log1p(-x)

    weights = actions.trade_weights.to(dtype)
    weights = (weights / weights.sum(dim=1, keepdim=True)).clamp(min=SHARE_CLIP)
    parts = {"broadcast": torch.atanh(actions.broadcast.to(dtype).clamp(-1 + SHARE_CLIP, 1 - SHARE_CLIP)),
             "effort": logit(actions.effort.unsqueeze(1), EFFORT_CLIP),
             "consume": logit(actions.consume, SHARE_CLIP),
             "trade_weights": torch.log(weights[:, :-1]) - torch.log(weights[:, -1:])}
    pre_image = torch.empty(actions.job.shape[0], gaussian_dim, dtype=dtype)
    for head, (start, stop) in head_slices.items():
        pre_image[:, start:stop] = parts[head]
    return pre_image


def window_forward(learner, own: torch.Tensor, peers: torch.Tensor, blocked: torch.Tensor, blocks: dict) -> dict:
    """The activations `policy_gradient` reads ([N, T, ...]: x, hidden, out, attention, relu) of each row's
    parameters (`blocks`, shaped views) on the given prepared inputs own [N, T, S], peers [N, T, K, P] and
    blocked [N, T, K]: the forward pass `act` computes, step by step (at most T steps, not a loop over agents)."""
    steps = []
    for t in range(own.shape[1]):
        mine, theirs, masked = own[:, t:t + 1], peers[:, t:t + 1], blocked[:, t:t + 1]
        step = {}
        if learner.uniform_attention:
            attention = uniform_attention_weights((~masked).to(own.dtype))
        else:
            step["relu"] = filter_hidden(mine, theirs.contiguous(), blocks)
            scores = relu_scores(step["relu"], blocks["score"]).masked_fill_(masked, MASKED_SCORE)
            attention = attention_weights(scores, masked, learner.config.attention_sink)
        parts = [mine, torch.bmm(attention, theirs.squeeze(1))]
        if learner.mean_context:
            parts.append(torch.bmm(uniform_attention_weights((~masked).to(own.dtype)), theirs.squeeze(1)))
        step["x"] = torch.cat(parts, dim=2)
        step["out"], step["hidden"] = learner.heads(step["x"], blocks["w1t"], blocks["b1"], blocks["w2t"], blocks["b2"])
        step["attention"] = attention
        steps.append(step)
    return {key: torch.cat([step[key] for step in steps], dim=1) for key in steps[0]}


class ReferenceAnchor:
    """What a REINFORCE learner keeps of its reference: the policy, the reference's pre-images and jobs for
    the window's steps ([N, T, G], [N, T]) and the learner's steps so far (the warm start's clock)."""

    def __init__(self, learner):
        config, economy = learner.config, learner.economy_config
        self.config = config
        check_reference(config, economy, learner.update_rows)
        self.policy = REFERENCES[config.reference](economy)
        n, t, g = learner.num_slots, config.update_every, learner.gaussian_dim
        self.head_slices, self.gaussian_dim = learner.head_slices, g
        self.pre_image = torch.zeros(n, t, g, dtype=learner.dtype, device=learner.device)
        self.job = torch.zeros(n, t, dtype=torch.int64, device=learner.device)
        self.warm = torch.zeros(t, dtype=torch.bool, device=learner.device)  # [T] window steps in the warm start
        self.steps = 0  # steps the learner has recorded (`update`): the warm start lasts reference_steps of them
        self.actions = None  # the reference's actions at the last `record`
        self.warm_now = False  # whether the last `record` was a warm-start step (a Python bool: no device sync)
        self.dtype = learner.dtype

    @property
    def warming(self) -> bool:
        """Whether the learner's next step is in its warm start (its update only clones the reference)."""
        return self.steps < self.config.reference_steps

    def record(self, t: int, observation) -> None:
        """Keep, as window step t, whether it is in the warm start and the reference's actions on `observation`
        (what it would do in each agent's place: their pre-images and jobs); after the warm start with
        lambda 0 nothing reads them, and the reference is not asked."""
        self.warm_now = self.warming
        self.warm[t] = self.warm_now
        if not (self.warm_now or self.config.reference_coef):
            return
        self.actions = self.policy.act(observation)
        self.pre_image[:, t].copy_(reference_pre_images(self.actions, self.head_slices, self.gaussian_dim, self.dtype))
        self.job[:, t].copy_(self.actions.job)

    def gradient(self, learner, window: dict, blocks: dict, block: slice, valid: torch.Tensor, counts: torch.Tensor,
                 like: torch.Tensor):
        """The cloning gradient [B, D] for a block of agents and the cloning loss [B] it is the gradient of
        (None, None when there is none): on the agents' own valid steps with weight 1 in the warm start and
        lambda after, plus `reference_rows` M rows of the population's windows, every step weighted 1 / M in the
        warm start and lambda / M after."""
        t = valid.shape[1]
        rows = self.config.reference_rows
        weight = torch.full((t,), self.config.reference_coef, dtype=like.dtype, device=like.device)
        weight.masked_fill_(self.warm[:t], 1.0)  # [t] (lambda in the learner's dtype, not rounded to float32)
        if not bool((weight > 0).any()):
            return None, None
        own = {**window, "pre_image": self.pre_image[block, :t], "job": self.job[block, :t]}
        total, loss = self._cloning_gradient(learner, own, blocks, weight.expand(valid.shape[0], t), valid, counts,
                                             like)
        if rows:
            every, steps = torch.ones_like(valid), torch.full_like(counts, t)
            each = (weight / rows).expand(valid.shape[0], t)
            for other in self.draw_rows(valid.shape[0], learner.generator, valid.device):
                inputs = {key: window[key][other] for key in ("own", "peers", "peer_blocked")}
                theirs = {**inputs, **window_forward(learner, inputs["own"], inputs["peers"], inputs["peer_blocked"],
                                                     blocks),
                          "pre_image": self.pre_image[other, :t], "job": self.job[other, :t]}
                grad, row_loss = self._cloning_gradient(learner, theirs, blocks, each, every, steps, like)
                total.add_(grad)
                loss.add_(row_loss)
        return total, loss

    def draw_rows(self, n: int, generator: torch.Generator, device) -> list[torch.Tensor]:
        """`reference_rows` permutations of the n slots (from the learner's generator): row i of the j-th
        clones the reference on the window of slot other[i]."""
        return [torch.randperm(n, generator=generator).to(device) for _ in range(self.config.reference_rows)]

    @staticmethod
    def _cloning_gradient(learner, window: dict, blocks: dict, weight: torch.Tensor, valid: torch.Tensor,
                          counts: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss -sum_t weight_t log pi(the window's stored actions) / counts over the valid steps [B] and its
        gradient [B, D]: REINFORCE's with the weights as advantages and no entropy bonus."""
        advantage = torch.where(valid, weight.to(like.dtype), 0.0)
        loss, _, grad = policy_gradient(window, blocks, learner.heads, advantage, valid, counts, 0.0,
                                        learner.economy_config.num_jobs, learner.self_dim, torch.empty_like(like))
        return grad, loss

    def state_dict(self, t: int) -> dict:
        return {"steps": self.steps, "pre_image": self.pre_image[:, :t].cpu().clone(),
                "job": self.job[:, :t].cpu().clone(), "warm": self.warm[:t].cpu().clone()}

    def check_state(self, state, window_step: int) -> None:
        """ValueError naming the entry unless `state` is what `state_dict(window_step)` of such an anchor returns."""
        if not isinstance(state, dict) or set(state) != {"steps", "pre_image", "job", "warm"}:
            raise ValueError("learner state has no 'reference' entry (steps, pre_image, job, warm): it was saved by "
                             "a learner without LearnerConfig.reference")
        shapes = {"pre_image": (self.pre_image.shape[0], window_step, self.pre_image.shape[2]),
                  "job": (self.job.shape[0], window_step), "warm": (window_step,)}
        for key, shape in shapes.items():
            if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != shape:
                raise ValueError(f"learner state's 'reference' {key!r} is not a tensor of shape {shape}")

    def load_state_dict(self, state) -> None:
        t = state["job"].shape[1]
        self.steps = int(state["steps"])
        self.pre_image[:, :t].copy_(state["pre_image"])
        self.job[:, :t].copy_(state["job"])
        self.warm[:t].copy_(state["warm"])
