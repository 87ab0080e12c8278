"""Independent per-agent PPO, computed batched over agent slots (docs/design.md section 5).

Each agent owns the seed's five networks exactly as in `agents.reinforce` (the same parameter
layout, the same acting code and rollout window) plus a sixth, `value_net`: a one-hidden-layer tanh
MLP (width `hidden_size`) from the heads' input [own, context] to the agent's value. The context
enters the value head detached: the critic reads what the social filter attends to but does not
shape it (the filter learns from the policy objective only).

Learning, at the end of each window of `update_every` steps (or on a truncated step), per agent:
    old log pi, V   one forward pass over the window at the current parameters (no gradient), plus
                    V of the observation after the window's last step (the bootstrap)
    A, R            GAE (`agents.advantages.gae`) over the agent's valid steps; R = A + V
    ppo_epochs x    loss_i = -mean_t min(rho A, clip(rho, 1 +- clip_epsilon) A)
                             + value_coef * mean_t (V_t - R_t)^2 - ppo_entropy_coef * mean_t H_t
                    one Adam step of agent i's own optimizer, gradient clipped to max_grad_norm per agent
Means are over agent i's valid steps: as in REINFORCE, the steps after its slot's last death in the
window (a dead agent's parameters are discarded with it, so its last partial window trains
nothing, and the newborn in its slot starts a new trajectory). GAE's recursion also stops at a
death and at the run's truncation, which ends every life (no bootstrap there). Advantages are not
normalised: an agent's window holds a handful of steps, and pooling over agents would couple them.

Gradients come from torch.autograd, batched: the whole loss is one graph over the stacked [N, ...]
parameters (batched products, nothing mixes rows) and one `torch.autograd.grad` of the sum of the N
losses gives every agent's own gradient. The acting code's layers (`agents.networks`) compute tanh
and relu in place, which autograd cannot differentiate, so `_window_forward` evaluates the same
parameter views with out-of-place operations (the heads' pick of outputs, the social filter's
masked softmax). It is also the pass that gives the old log-probabilities, so the first epoch's
ratios are exactly 1.

Inputs are REINFORCE's but for the season: the observation gives (sin, cos) of each job's season
angle theta_j, whose production factor cos^2 theta_j has half that period, so "the job in season"
(the larger cos^2) is an XOR of the signs of cos +- sin, which no linear function of those features
separates (the best linear rule is right 75% of the time). Small-weight tanh networks start nearly
linear, and neither learner found the season's job in 10,000 steps from them (issue 15:
job choice in season stayed at chance). PPO reads the season as the production cycle's phase instead,
(sin 2 theta_j, cos 2 theta_j) (`double_season_angle`; cos 2 theta_j = 2 cos^2 theta_j - 1 is the
production factor rescaled), which loses only the sign that production ignores; the job in season is
then linear in the inputs. `season_double_angle = False` on a subclass restores the raw angle.

Births, resume and divergence checks are REINFORCE's: a newborn's six networks are a crossover (a
fair coin per network) plus mutation of its parents', with fresh Adam state; `state_dict` holds the
parameters, optimizer state, the filled window steps and the generator (nothing else: the old
log-probabilities and values are recomputed from them at the window's end).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from agents.advantages import clipped_surrogate, gae
from agents.baselines import uniform_attention_weights
from agents.config import LearnerConfig
from agents.networks import MASKED_SCORE, attention_weights, mlp_specs, relu_scores
from agents.optim import clip_coefficients
from agents.policy_gradient import LOG_STD_RANGE
from agents.reinforce import ReinforceLearner, double_season_angle
from agents.spatial import NUM_MOVES
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Observation, StepOutput

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
__all__ = ["PPOLearner", "log_prob_and_entropy"]


def log_prob_and_entropy(out: torch.Tensor, raw_log_std: torch.Tensor, pre_image: torch.Tensor, job: torch.Tensor,
                         num_jobs: int, tokens: Optional[torch.Tensor] = None,
                         vocab_size: int = 0, move: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's log-probability of the stored actions and its entropy, differentiable: out [N, M, J + G]
    (job logits, Gaussian means), raw_log_std [N, G] (clamped to LOG_STD_RANGE), pre_image [N, M, G],
    job [N, M]. log pi = log softmax(logits)[job] + one Gaussian log density over the G pre-images (as in
    REINFORCE: the squashing's Jacobian has no parameters); H = categorical + Gaussian entropy. [N, M] each.
    Symbolic broadcast mode: ``tokens`` [N, M, L] and out [N, M, J + L * V + G] (each token's V logits
    after the job's); log pi and H add every token's categorical log-probability and entropy.
    Spatial worlds: ``move`` [N, M] and the move's NUM_MOVES logits right after the job's (before any token's);
    log pi and H add the move's categorical log-probability and entropy."""
    g = raw_log_std.shape[-1]
    log_std = raw_log_std.clamp(*LOG_STD_RANGE)
    token_start = num_jobs + (0 if move is None else NUM_MOVES)
    categorical_width = token_start + (0 if tokens is None else tokens.shape[-1] * vocab_size)
    z = (pre_image - out[..., categorical_width:]) / log_std.exp().unsqueeze(1)
    log_p = torch.log_softmax(out[..., :num_jobs], dim=-1)
    log_std_sum = log_std.sum(-1, keepdim=True)  # [N, 1]
    log_prob = log_p.gather(-1, job.unsqueeze(-1)).squeeze(-1) - 0.5 * z.square().sum(-1) \
        - (log_std_sum + g * _LOG_SQRT_2PI)
    entropy = -(log_p.exp() * log_p).sum(-1) + (log_std_sum + g * (0.5 + _LOG_SQRT_2PI))
    if move is not None:
        move_log_p = torch.log_softmax(out[..., num_jobs:token_start], dim=-1)
        log_prob = log_prob + move_log_p.gather(-1, move.unsqueeze(-1)).squeeze(-1)
        entropy = entropy - (move_log_p.exp() * move_log_p).sum(-1)
    if tokens is not None:
        token_log_p = torch.log_softmax(out[..., token_start:categorical_width].unflatten(-1, (-1, vocab_size)), dim=-1)
        log_prob = log_prob + token_log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
        entropy = entropy - (token_log_p.exp() * token_log_p).sum((-2, -1))
    return log_prob, entropy


class PPOLearner(ReinforceLearner):
    """N independent PPO agents in one set of stacked tensors. See the module docstring."""

    season_double_angle = True  # read the season as the production cycle's phase (module docstring)
    compact_window = False  # the update reads the whole window at once (`rollout_batch`)
    supports_reference = False  # its clipped update has no cloning term (LearnerConfig.reference is refused)

    def __init__(self, economy_config: EconomyConfig, learner_config: Optional[LearnerConfig] = None):
        super().__init__(economy_config, learner_config, uniform_attention=False)

    # -- structure: REINFORCE's networks plus the value head ---------------------------------
    def _network_spec(self) -> dict:
        spec = super()._network_spec()
        spec["value_net"] = mlp_specs(self.self_dim + self.peer_dim, self.config.hidden_size, 1)
        return spec

    def _blocks(self) -> dict:
        blocks = super()._blocks()
        blocks.update({f"value_net.{kind}": (f"value_net.{kind}",) for kind in ("w1", "b1", "w2", "b2")})
        return blocks

    def _shaped_blocks(self, blocks: dict) -> dict:
        shaped = super()._shaped_blocks(blocks)
        n, h, x = blocks["value_net.w1"].shape[0], self.config.hidden_size, self.self_dim + self.peer_dim
        shaped.update({"value_w1t": blocks["value_net.w1"].view(n, h, x).transpose(1, 2),
                       "value_b1": blocks["value_net.b1"].view(n, 1, h),
                       "value_w2t": blocks["value_net.w2"].view(n, 1, h).transpose(1, 2),
                       "value_b2": blocks["value_net.b2"].view(n, 1, 1)})
        return shaped

    # -- the differentiable forward pass over a window -----------------------------------------
    def _window_forward(self, blocks: dict, own: torch.Tensor, peers: torch.Tensor, blocked: torch.Tensor):
        """Policy outputs [N, M, J + G] and values [N, M] for M stored steps: own [N, M, S], peers
        [N, M, K, P], blocked [N, M, K]. Out-of-place operations only (autograd-safe)."""
        n, m, k, p = peers.shape
        own_part = torch.baddbmm(blocks["bias"], own, blocks["w_own"])  # [N, M, A]
        relu = (torch.bmm(peers.reshape(n, m * k, p), blocks["w_peer"]).view(n, m, k, -1)
                + own_part.unsqueeze(2)).relu()  # [N, M, K, A]
        scores = relu_scores(relu, blocks["score"]).masked_fill(blocked, MASKED_SCORE)
        attention = attention_weights(scores, blocked, self.config.attention_sink)  # [N, M, K]
        context = torch.bmm(attention.reshape(n * m, 1, k), peers.reshape(n * m, k, p)).view(n, m, p)
        x = torch.cat([own, context], dim=-1)  # [N, M, S + P]
        if self.mean_context:  # the plain mean of the live peers beside it (LearnerConfig.mean_context)
            weights = uniform_attention_weights((~blocked).to(peers.dtype))
            mean = torch.bmm(weights.reshape(n * m, 1, k), peers.reshape(n * m, k, p)).view(n, m, p)
            x = torch.cat([x, mean], dim=-1)  # [N, M, S + 2P]
        heads = self.heads
        hidden = torch.tanh(torch.baddbmm(blocks["b1"], x, blocks["w1t"]))  # [N, M, G*H]
        every = torch.baddbmm(blocks["b2"], hidden.view(n, m * heads.count, heads.hidden), blocks["w2t"])
        out = every.view(n, m, heads.count * heads.out_total).index_select(2, heads.pick)
        critic_x = torch.cat([own, context.detach()], dim=-1)
        value_hidden = torch.tanh(torch.baddbmm(blocks["value_b1"], critic_x, blocks["value_w1t"]))
        value = torch.baddbmm(blocks["value_b2"], value_hidden, blocks["value_w2t"]).squeeze(-1)  # [N, M]
        return out, value

    def _prepare(self, observation: Observation):
        """An observation as the window stores it (what `act` writes): own [N, 1, S], peers [N, 1, K, P],
        blocked [N, 1, K], holdings as log1p."""
        r = self.economy_config.num_resources
        # on the learner's device, in its dtype (as the window holds it)
        self_features, observed_peers = (tensor.to(self.device, self.dtype, non_blocking=True)
                                         for tensor in (observation.self_features, observation.peers))
        peer_mask = observation.peer_mask.to(self.device, non_blocking=True)
        own = self_features.clone()
        own[:, :r] = self_features[:, :r].clamp(min=0).log1p()
        if self.season_double_angle:
            double_season_angle(own, self.economy_config.num_jobs, self.season_end)
        peers = observed_peers.clone()
        peers[..., -r:] = observed_peers[..., -r:].clamp(min=0).log1p()
        return own.unsqueeze(1), peers.unsqueeze(1), (peer_mask <= 0).unsqueeze(1)

    def loss(self, flat: torch.Tensor, batch: dict) -> dict:
        """Each agent's PPO loss [N] and its parts, for parameters flat [N, D] and a batch of [N, T, ...]
        tensors: own, peers, peer_blocked, pre_image, job, old_log_prob, advantage, returns, valid."""
        blocks = self._shaped_blocks(self.layout.block_views(flat))
        out, value = self._window_forward(blocks, batch["own"], batch["peers"], batch["peer_blocked"])
        log_prob, entropy = log_prob_and_entropy(out, blocks["log_std"], batch["pre_image"], batch["job"],
                                                 self.economy_config.num_jobs, batch.get("tokens"), self.vocab_size,
                                                 batch.get("move"))
        valid = batch["valid"]
        weight = valid.sum(1).clamp(min=1).to(self.dtype).reciprocal()  # [N] 1 / valid steps
        log_ratio = log_prob - batch["old_log_prob"]
        surrogate = clipped_surrogate(log_ratio, batch["advantage"], self.config.clip_epsilon)
        policy = -torch.where(valid, surrogate, 0.0).sum(1) * weight
        value_loss = torch.where(valid, (value - batch["returns"]).square(), 0.0).sum(1) * weight
        mean_entropy = torch.where(valid, entropy, 0.0).sum(1) * weight
        total = policy + self.config.value_coef * value_loss - self.config.ppo_entropy_coef * mean_entropy
        clipped = valid & ((log_ratio.exp() - 1.0).abs() > self.config.clip_epsilon)
        return {"loss": total, "policy": policy, "value": value_loss, "entropy": mean_entropy,
                "clipped": clipped.sum(1), "kl": torch.where(valid, -log_ratio, 0.0).sum(1) * weight}

    # -- Learner protocol (act, update, on_births: REINFORCE's; the window ends in _learn_window) ---
    def state_dict(self) -> dict:
        return {**super().state_dict(), "kind": "ppo"}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "ppo":
            raise ValueError(f"learner state is for {state.get('kind')!r}, this learner is 'ppo'")
        super().load_state_dict({**state, "kind": "reinforce"})

    # -- learning ----------------------------------------------------------------------------
    def rollout_batch(self, step: StepOutput) -> Optional[dict]:
        """The window's batch with old log-probabilities, values, GAE advantages and returns (None when no
        slot has a valid step). `step` is the window's last step (its observation gives the bootstrap)."""
        t = self._t
        start = self.window.window_start
        valid = self._step_index[:t] >= start[:, None]  # [N, T]
        if not bool(valid.any()):
            return None
        window = self.window.first(t)
        batch = {key: window[key] for key in ("own", "peers", "peer_blocked", "pre_image", "job", "tokens", "move")
                 if key in window}  # tokens: the symbolic mode's; move: a spatial world's
        next_own, next_peers, next_blocked = self._prepare(step.observation)
        with torch.no_grad():
            blocks = self._blocks_now
            out, value = self._window_forward(blocks, torch.cat([batch["own"], next_own], 1),
                                              torch.cat([batch["peers"], next_peers], 1),
                                              torch.cat([batch["peer_blocked"], next_blocked], 1))
            log_prob, _ = log_prob_and_entropy(out[:, :t], blocks["log_std"], batch["pre_image"], batch["job"],
                                               self.economy_config.num_jobs, batch.get("tokens"), self.vocab_size,
                                               batch.get("move"))
        # done: the step that killed the slot's previous occupant, and the truncated last step
        done = self._step_index[:t] == (start[:, None] - 1)
        if step.truncated:
            done[:, t - 1] = True
        reward = window["reward"]
        advantage, returns = gae(reward, value[:, :t].double(), value[:, t].double(), done, self.config.gamma,
                                 self.config.gae_lambda)
        batch.update(old_log_prob=log_prob, advantage=advantage.to(self.dtype), returns=returns.to(self.dtype),
                     valid=valid)
        return batch

    def _learn_window(self, step: StepOutput) -> dict:
        """ppo_epochs Adam steps per agent with data in the window. Raises NonFiniteLossError naming the
        agents on a non-finite loss or gradient (before that epoch's step) or parameter (after it)."""
        batch = self.rollout_batch(step)
        if batch is None:
            return {}
        active = batch["valid"].any(1)  # [N]
        acting_ids = step.acting_ids
        for epoch in range(self.config.ppo_epochs):
            flat = self.flat_params.detach().requires_grad_(True)
            parts = self.loss(flat, batch)
            (grad,) = torch.autograd.grad(parts["loss"].sum(), flat)
            norms = torch.linalg.vector_norm(grad, dim=1)  # [N]
            if not bool(torch.isfinite(parts["loss"].detach() + norms).all()):
                consequence = f"epoch {epoch + 1} of {self.config.ppo_epochs} changed no weight"
                self._refuse_non_finite(parts["loss"].detach(), active, acting_ids, "loss", consequence)
                self._refuse_non_finite(norms, active, acting_ids, "gradient", consequence)
            self.optimizer.step([grad], active, grad_scale=clip_coefficients(norms, self.config.max_grad_norm))
            if not bool(torch.isfinite(self.flat_params.sum())):
                finite = torch.isfinite(self.flat_params).all(dim=1)
                self._refuse_non_finite(torch.where(finite, 0.0, math.nan), active, acting_ids,
                                        "parameters after the optimizer step",
                                        "the policy diverged (lower the learning rate)")
            if epoch == 0:
                first = parts
                first_norms = norms
        valid = batch["valid"]
        on = active.to(self.dtype)
        sums = torch.stack([active.sum(), valid.sum(), (first["loss"].detach() * on).sum(),
                            (first["entropy"].detach() * on).sum(), (first_norms * on).sum(),
                            (first["value"].detach() * on).sum(), (parts["clipped"]).sum(),
                            (parts["kl"].detach() * on).sum(),
                            torch.where(valid, batch["returns"], 0.0).sum(),
                            torch.where(valid, batch["advantage"].abs(), 0.0).sum()]).tolist()
        num_active, num_valid, loss, entropy, norm, value, clipped, kl, returns, advantage = sums
        return {"loss": loss / num_active, "entropy": entropy / num_active, "grad_norm": norm / num_active,
                "value_loss": value / num_active, "clip_fraction": clipped / num_valid,
                "approx_kl": kl / num_active, "return": returns / num_valid, "advantage_abs": advantage / num_valid,
                "active_agents": num_active}
