"""Independent per-agent REINFORCE, computed batched over agent slots (DESIGN.md section 5).

Networks (each agent owns all five; every parameter is stacked [N, ...], see `agents.networks`):
    social_filter_net  score of peer k = v . relu(W_own own + W_peer peer_k + b); softmax over live
                       peers (`peer_mask`); context = attention-weighted mean of peer features [P]
    broadcast_net      [own, context] -> mean of the broadcast pre-image u_b [B]
    production_net     [own, context] -> job logits [J] and mean of the effort pre-image u_e [1]
    trading_net        [own, context] -> mean of the trade-weight pre-image u_t [R - 1]
    consumption_net    [own, context] -> mean of the consumption pre-image u_c [R]
Each Gaussian head also owns a state-independent log std per dimension.

Policy: job ~ Categorical(logits); u ~ Normal(mean, std) squashed into the action boxes:
    broadcast = tanh(u_b)                        (tanh-Normal, in (-1, 1))
    effort    = sigmoid(u_e)                     (logit-normal, in (0, 1))
    trade     = softmax([u_t, 0])                (additive logistic-normal on the simplex)
    consume   = sigmoid(u_c)                     (logit-normal per resource)
`head_log_probs` gives densities of the actions themselves (Gaussian log density of u minus the log
Jacobian of the squashing); the learner stores u, so no inverse squashing is ever needed. The loss
uses the log density of u (`score_log_prob`): the Jacobian has no parameters, so the gradient is
the same. The entropy bonus is the categorical entropy plus the entropy of the Gaussian pre-images
(the squashed densities have no closed form).

Inputs: holdings (own and peers') enter as log1p(holdings), so rich agents do not saturate tanh.
The social filter's hidden layer is relu, not tanh: it runs over N x K peers x width, the hot spot.

Learning. An agent's life is its episode. The learner acts under no_grad and stores each step's
inputs and pre-images in a window of `update_every` steps ([N, T, ...]); at the end of the window
(or on a truncated step, which ends every life) it recomputes all log-probabilities in one batched
forward pass and takes one REINFORCE step per agent:
    loss_i = -mean_t [ (G_it - b_i) log pi_i(a_it) + entropy_coef * H_it ]   over agent i's valid steps
with G the discounted reward-to-go within the window (cut at death) and b_i the agent's own
bias-corrected EMA of its mean window return (a fresh agent's first window uses its own mean).
When an agent dies its steps in the current window are dropped: its parameters are discarded with
it (children inherit from living parents), so its last partial window can train nothing; the
newborn in its slot starts with an empty window. Parameters update with `BatchedAdam`, clipped per
agent; a NaN/inf loss or gradient raises NonFiniteLossError naming the agents before any change.

Births: each of a newborn's five networks is copied whole from one of its two parents, chosen by a
fair coin per network (crossover at the network level keeps each network's hidden units coherent,
whereas mixing entries of two unrelated networks scrambles them; the networks only talk through
fixed-meaning interfaces: attention over raw peer features and the [own, context] input), then
every entry gets N(0, param_mutation^2) noise. Founders (no parents) get fresh random networks.
Either way the newborn's optimizer state and baseline are fresh.

With `uniform_attention=True` (the ablation) there is no social_filter_net: the context is the plain
mean over live peers; everything else is identical.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from agents import LearnerConfig
from agents.base import NonFiniteLossError
from agents.baselines import uniform_attention_weights
from agents.networks import DTYPE, FlatLayout, ParamSpec, linear, mlp, mlp_specs
from agents.optim import BatchedAdam, clip_grad_norm_per_row_, row_norms
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput
from homoecon_env.core.lifecycle import ALIVE, Births

HEAD_NETWORKS = ("broadcast_net", "production_net", "trading_net", "consumption_net")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class PolicyOutput:
    """The policy of N agents at M inputs each."""

    job_logits: torch.Tensor  # [N, M, J]
    mean: torch.Tensor  # [N, M, G] means of the Gaussian pre-images, layout [broadcast B | effort 1 | trade R-1 | consume R]
    log_std: torch.Tensor  # [N, 1, G]
    attention: torch.Tensor  # [N, M, K], sums to 1 over live peers, 0 on masked slots


class ReinforceLearner:
    """N independent REINFORCE agents in one set of stacked tensors. See the module docstring."""

    def __init__(self, economy_config: EconomyConfig, learner_config: Optional[LearnerConfig] = None,
                 uniform_attention: bool = False):
        self.economy_config = c = economy_config
        self.config = learner_config or LearnerConfig()
        self.uniform_attention = bool(uniform_attention)
        r, b, j = c.num_resources, c.broadcast_dim, c.num_jobs
        self.num_slots, self.num_peer_slots = c.num_agents, c.peers_observed
        self.self_dim = 2 * r + 2 + b + c.id_dim + 2 * j  # S, layout in homoecon_env.core.observe
        self.peer_dim = b + c.id_dim + r  # P
        self.head_dims = {"broadcast": b, "effort": 1, "trade_weights": r - 1, "consume": r}
        self.gaussian_dim = sum(self.head_dims.values())  # G
        ends = itertools.accumulate(self.head_dims.values())
        self.head_slices = {head: (end - size, end) for (head, size), end in zip(self.head_dims.items(), ends)}
        self.spec = self._network_spec()
        self.layout = FlatLayout(self.spec)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.flat_params = self.layout.init(self.num_slots, self.generator)  # [N, D] row i = agent i's parameters
        self.params = self.layout.views(self.flat_params)  # {'network.param': [N, *shape]} views of flat_params
        self.optimizer = BatchedAdam([self.flat_params], lr=self.config.learning_rate,
                                     betas=(self.config.adam_beta1, self.config.adam_beta2), eps=self.config.adam_eps)
        self.baseline = torch.zeros(self.num_slots, dtype=torch.float64)  # [N] EMA of mean window return
        self.baseline_updates = torch.zeros(self.num_slots, dtype=torch.int64)  # [N] EMA terms so far
        self.last_attention = torch.zeros(self.num_slots, self.num_peer_slots)  # [N, K]
        self._buffer = self._empty_buffer()
        self._t = 0  # steps stored in the current window

    # -- structure ---------------------------------------------------------------------------
    def _network_spec(self) -> dict:
        s, p, h, log_std = self.self_dim, self.peer_dim, self.config.hidden_size, self.config.init_log_std
        spec = {}
        if not self.uniform_attention:
            bound, a = 1.0 / math.sqrt(s + p), self.config.attention_hidden_size
            spec["social_filter_net"] = {
                "w_own": ParamSpec((s, a), ("uniform", bound)), "w_peer": ParamSpec((p, a), ("uniform", bound)),
                "bias": ParamSpec((a,), ("uniform", bound)), "score": ParamSpec((a,), ("uniform", 1.0 / math.sqrt(a)))}
        outputs = {"broadcast_net": (self.head_dims["broadcast"], self.head_dims["broadcast"]),
                   "production_net": (self.economy_config.num_jobs + 1, 1),
                   "trading_net": (self.head_dims["trade_weights"],) * 2,
                   "consumption_net": (self.head_dims["consume"],) * 2}
        for net, (out, gaussian) in outputs.items():
            spec[net] = {**mlp_specs(s + p, h, out), "log_std": ParamSpec((gaussian,), ("constant", log_std))}
        return spec

    def _empty_buffer(self) -> dict:
        n, t, k = self.num_slots, self.config.update_every, self.num_peer_slots
        return {
            "own": torch.zeros(n, t, self.self_dim, dtype=DTYPE),  # [N, T, S] prepared own features
            "peers": torch.zeros(n, t, k, self.peer_dim, dtype=DTYPE),  # [N, T, K, P]
            "peer_mask": torch.zeros(n, t, k, dtype=torch.bool),  # [N, T, K]
            "pre_image": torch.zeros(n, t, self.gaussian_dim, dtype=DTYPE),  # [N, T, G] sampled u
            "job": torch.zeros(n, t, dtype=torch.int64),  # [N, T]
            "reward": torch.zeros(n, t, dtype=torch.float64),  # [N, T]
            "ended": torch.zeros(n, t, dtype=torch.bool),  # [N, T] the agent died at this step
            "valid": torch.zeros(n, t, dtype=torch.bool),  # [N, T] the step trains the slot's current agent
        }

    # -- policy ------------------------------------------------------------------------------
    def prepare(self, observation: Observation):
        """Network inputs from an observation: own [N, S], peers [N, K, P] (holdings as log1p), mask [N, K] bool."""
        r = self.economy_config.num_resources
        own = observation.self_features.to(DTYPE)
        own = torch.cat([torch.log1p(own[:, :r].clamp(min=0)), own[:, r:]], dim=1)
        peers = observation.peers.to(DTYPE)
        peers = torch.cat([peers[..., :-r], torch.log1p(peers[..., -r:].clamp(min=0))], dim=-1)
        return own, peers, observation.peer_mask > 0

    def policy(self, params: dict, own: torch.Tensor, peers: torch.Tensor, mask: torch.Tensor) -> PolicyOutput:
        """The policy of every agent at M inputs: own [N, M, S], peers [N, M, K, P], mask [N, M, K] bool."""
        n, m, k, p = peers.shape
        attention = self.attention(params, own, peers, mask)  # [N, M, K]
        context = torch.bmm(attention.reshape(n * m, 1, k), peers.reshape(n * m, k, p)).reshape(n, m, p)
        x = torch.cat([own, context], dim=-1)  # [N, M, S + P]
        broadcast = mlp(x, params, "broadcast_net")
        production = mlp(x, params, "production_net")
        trade = mlp(x, params, "trading_net")
        consume = mlp(x, params, "consumption_net")
        mean = torch.cat([broadcast, production[..., -1:], trade, consume], dim=-1)
        log_std = torch.cat([params[f"{net}.log_std"] for net in HEAD_NETWORKS], dim=-1).unsqueeze(1)
        return PolicyOutput(production[..., :-1], mean, log_std.clamp(-10.0, 2.0), attention)

    def attention(self, params: dict, own: torch.Tensor, peers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, M, K] attention over peer slots: the social filter's softmax over live peers (0 on masked
        slots, all 0 when no peer is live), or their plain mean in the uniform ablation."""
        if self.uniform_attention:
            return uniform_attention_weights(mask.to(DTYPE))
        n, m, k, p = peers.shape
        own_part = linear(own, params["social_filter_net.w_own"], params["social_filter_net.bias"])  # [N, M, H]
        peer_part = torch.bmm(peers.reshape(n, m * k, p), params["social_filter_net.w_peer"])  # [N, M*K, H]
        hidden = torch.relu(peer_part.reshape(n, m, k, -1) + own_part.unsqueeze(2))  # [N, M, K, H], relu: N*K*H is the hot spot
        scores = (hidden * params["social_filter_net.score"][:, None, None, :]).sum(-1)  # [N, M, K]; faster than bmm
        weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)  # finite fill keeps gradients finite
        return weights * mask

    def head_log_probs(self, out: PolicyOutput, pre_image: torch.Tensor, job: torch.Tensor) -> dict:
        """Log-density of each action head at the stored pre-images u [N, M, G] and jobs [N, M]: {head: [N, M]}."""
        gaussian = self._gaussian_log_density(out, pre_image)  # [N, M, G]
        log_det = self._squash_log_det(pre_image)
        result = {"job": self._job_log_prob(out, job)}
        for head, (start, stop) in self.head_slices.items():
            result[head] = gaussian[..., start:stop].sum(-1) - log_det[head]
        return result

    def score_log_prob(self, out: PolicyOutput, pre_image: torch.Tensor, job: torch.Tensor) -> torch.Tensor:
        """[N, M] log-probability used in the REINFORCE loss: job log-prob plus the Gaussian log density of
        the pre-images. It differs from the sum of `head_log_probs` only by the squashing's log Jacobian,
        which has no parameters, so the gradient is the same, for fewer operations."""
        return self._job_log_prob(out, job) + self._gaussian_log_density(out, pre_image).sum(-1)

    @staticmethod
    def _gaussian_log_density(out: PolicyOutput, pre_image: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((pre_image - out.mean) / out.log_std.exp()).square() - out.log_std - _LOG_SQRT_2PI

    @staticmethod
    def _job_log_prob(out: PolicyOutput, job: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(out.job_logits, dim=-1).gather(-1, job.unsqueeze(-1)).squeeze(-1)

    def entropy(self, out: PolicyOutput) -> torch.Tensor:
        """[N, M] categorical entropy of the job plus the entropy of the Gaussian pre-images."""
        log_p = torch.log_softmax(out.job_logits, dim=-1)
        categorical = -(log_p.exp() * log_p).sum(-1)
        gaussian = (out.log_std + 0.5 + _LOG_SQRT_2PI).sum(-1)  # [N, 1]
        return categorical + gaussian

    def _squash_log_det(self, pre_image: torch.Tensor) -> dict:
        """{head: [N, M]} log |d action / d u| of each squashing (no parameters involved)."""
        s = self.head_slices
        u_b = pre_image[..., slice(*s["broadcast"])]
        u_t = pre_image[..., slice(*s["trade_weights"])]
        sigmoid_log_det = lambda u: (-F.softplus(-u) - F.softplus(u)).sum(-1)
        simplex = torch.log_softmax(torch.cat([u_t, u_t.new_zeros(*u_t.shape[:-1], 1)], dim=-1), dim=-1)
        return {"broadcast": (2.0 * (math.log(2.0) - u_b - F.softplus(-2.0 * u_b))).sum(-1),
                "effort": sigmoid_log_det(pre_image[..., slice(*s["effort"])]),
                "trade_weights": simplex.sum(-1),  # the additive logistic map has det = prod_r w_r
                "consume": sigmoid_log_det(pre_image[..., slice(*s["consume"])])}

    def squash(self, pre_image: torch.Tensor, job: torch.Tensor) -> Actions:
        """Actions from pre-images u [N, G] and jobs [N]."""
        s = self.head_slices
        u_t = pre_image[:, slice(*s["trade_weights"])]
        return Actions(broadcast=torch.tanh(pre_image[:, slice(*s["broadcast"])]), job=job,
                       effort=torch.sigmoid(pre_image[:, s["effort"][0]]),
                       trade_weights=torch.softmax(torch.cat([u_t, u_t.new_zeros(u_t.shape[0], 1)], dim=1), dim=1),
                       consume=torch.sigmoid(pre_image[:, slice(*s["consume"])]))

    # -- Learner protocol --------------------------------------------------------------------
    @torch.no_grad()
    def act(self, observation: Observation) -> Actions:
        """Sample every slot's actions with the learner's generator and store them in the window."""
        own, peers, mask = self.prepare(observation)
        out = self.policy(self.params, own.unsqueeze(1), peers.unsqueeze(1), mask.unsqueeze(1))
        n = own.shape[0]
        noise = torch.randn(n, self.gaussian_dim, generator=self.generator, dtype=DTYPE)
        pre_image = out.mean[:, 0] + out.log_std[:, 0].exp() * noise  # [N, G]
        cumulative = torch.softmax(out.job_logits[:, 0], dim=-1).cumsum(dim=-1)  # [N, J], inverse-CDF draw
        uniform = torch.rand(n, 1, generator=self.generator, dtype=DTYPE)
        job = (cumulative < uniform).sum(dim=-1).clamp(max=self.economy_config.num_jobs - 1)
        t, buffer = self._t, self._buffer
        buffer["own"][:, t] = own
        buffer["peers"][:, t] = peers
        buffer["peer_mask"][:, t] = mask
        buffer["pre_image"][:, t] = pre_image
        buffer["job"][:, t] = job
        buffer["valid"][:, t] = True
        buffer["ended"][:, t] = False
        self.last_attention = out.attention[:, 0]
        return self.squash(pre_image, job)

    def update(self, step: StepOutput) -> dict:
        """Record the step's rewards and deaths; at the end of a window or on truncation, learn."""
        t, buffer = self._t, self._buffer
        dead = step.death_cause != ALIVE
        buffer["reward"][:, t] = step.reward
        buffer["ended"][:, t] = dead
        buffer["valid"][dead] = False  # a dead agent's window trains nothing (its parameters are discarded)
        self._t += 1
        if self._t < self.config.update_every and not step.truncated:
            return {}
        metrics = self._learn(step.acting_ids)  # raises before any change on a non-finite loss or gradient
        self._clear_window()
        return metrics

    def on_births(self, births: Births) -> None:
        """Newborn slots get crossed-over, mutated copies of their parents' networks (fresh ones for
        founders), fresh optimizer state, a fresh baseline and an empty window."""
        born = births.born
        if not bool(born.any()):
            return
        rows = born.nonzero().squeeze(1)  # [D]
        parents = births.parent_slots[rows]  # [D, 2]
        founders = parents[:, 0] < 0
        g, count, flat = self.generator, rows.numel(), self.flat_params
        take_second = torch.rand(count, len(self.spec), generator=g) < 0.5  # [D, networks] a coin per network
        coin = take_second[:, self.layout.column_network]  # [D, params] the coin of each entry's network
        child = torch.where(coin, flat[parents[:, 1].clamp(min=0)], flat[parents[:, 0].clamp(min=0)])
        child += torch.randn(child.shape, generator=g, dtype=DTYPE).mul_(self.config.param_mutation)
        if bool(founders.any()):
            child[founders] = self.layout.init(int(founders.sum()), g)
        flat.index_copy_(0, rows, child)
        self.optimizer.reset_rows(born)
        self.baseline.masked_fill_(born, 0.0)
        self.baseline_updates.masked_fill_(born, 0)
        self._buffer["valid"][born] = False

    def state_dict(self) -> dict:
        """Parameters, optimizer state, baselines, the current window and the generator: resume is bit-exact."""
        return {
            "kind": "uniform_attention" if self.uniform_attention else "reinforce",
            "params": self.flat_params.clone(),  # [N, D]
            "param_layout": {name: (start, stop) for name, (start, stop, _) in self.layout.entries.items()},
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.clone(),
            "baseline_updates": self.baseline_updates.clone(),
            "buffer": {key: value.clone() for key, value in self._buffer.items()},
            "window_step": self._t,
            "generator": self.generator.get_state(),
            "last_attention": self.last_attention.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        kind = "uniform_attention" if self.uniform_attention else "reinforce"
        if state.get("kind") != kind:
            raise ValueError(f"learner state is for {state.get('kind')!r}, this learner is {kind!r}")
        layout = {name: (start, stop) for name, (start, stop, _) in self.layout.entries.items()}
        if state["param_layout"] != layout or state["params"].shape != self.flat_params.shape:
            raise ValueError(f"learner state has parameters {tuple(state['params'].shape)} laid out as "
                             f"{state['param_layout']}, expected {tuple(self.flat_params.shape)} laid out as {layout} "
                             "(num_agents, hidden_size or the economy's sizes differ)")
        self.flat_params.copy_(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"].clone()
        self.baseline_updates = state["baseline_updates"].clone()
        self._buffer = {key: value.clone() for key, value in state["buffer"].items()}
        self._t = int(state["window_step"])
        self.generator.set_state(state["generator"])
        self.last_attention = state["last_attention"].clone()

    # -- learning ----------------------------------------------------------------------------
    def _clear_window(self) -> None:
        self._t = 0
        self._buffer["valid"].zero_()
        self._buffer["ended"].zero_()

    def _returns(self, reward: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """[N, T] discounted reward-to-go within the window, cut where an agent died."""
        returns = torch.empty_like(reward)
        running = torch.zeros_like(reward[:, 0])
        for t in range(reward.shape[1] - 1, -1, -1):  # over time steps, never over agents
            running = reward[:, t] + self.config.gamma * torch.where(ended[:, t], 0.0, running)
            returns[:, t] = running
        return returns

    def _learn(self, acting_ids: torch.Tensor) -> dict:
        """One REINFORCE step per agent with data in the window. Raises NonFiniteLossError before any change."""
        t = self._t
        b = {key: value[:, :t] for key, value in self._buffer.items()}
        valid = b["valid"]  # [N, T]
        active = valid.any(dim=1)  # [N]
        if not bool(active.any()):
            return {}
        counts = valid.sum(dim=1).clamp(min=1)  # [N]
        returns = self._returns(b["reward"], b["ended"])
        window_mean = torch.where(valid, returns, 0.0).sum(dim=1) / counts  # [N]
        decay = self.config.baseline_decay
        corrected = self.baseline / (1.0 - decay ** self.baseline_updates.to(torch.float64)).clamp(min=1e-300)
        baseline = torch.where(self.baseline_updates > 0, corrected, window_mean)
        advantage = torch.where(valid, returns - baseline[:, None], 0.0).to(DTYPE)  # [N, T]

        leaf = self.flat_params.detach().requires_grad_(True)  # [N, D], shares storage with flat_params
        out = self.policy(self.layout.views(leaf), b["own"], b["peers"], b["peer_mask"])
        log_prob = self.score_log_prob(out, b["pre_image"], b["job"])  # [N, T]
        entropy = self.entropy(out)  # [N, T]
        objective = torch.where(valid, advantage * log_prob + self.config.entropy_coef * entropy, 0.0)
        loss = -objective.sum(dim=1) / counts.to(DTYPE)  # [N] each agent's own loss
        self._refuse_non_finite(loss, active, acting_ids, "loss")
        grads = list(torch.autograd.grad(loss.sum(), [leaf]))
        norms = row_norms(grads)
        self._refuse_non_finite(norms, active, acting_ids, "gradient")
        clip_grad_norm_per_row_(grads, self.config.max_grad_norm, norms)
        self.optimizer.step(grads, active)

        self.baseline = torch.where(active, decay * self.baseline + (1 - decay) * window_mean, self.baseline)
        self.baseline_updates = self.baseline_updates + active.long()
        num_valid = valid.sum()
        return {
            "loss": float(loss.detach()[active].mean()),
            "entropy": float(torch.where(valid, entropy.detach(), 0.0).sum() / num_valid),
            "grad_norm": float(norms[active].mean()),
            "return": float(torch.where(valid, returns, 0.0).sum() / num_valid),
            "advantage_abs": float(advantage.abs().sum() / num_valid),
            "active_agents": float(active.sum()),
        }

    @staticmethod
    def _refuse_non_finite(values: torch.Tensor, active: torch.Tensor, acting_ids: torch.Tensor, what: str) -> None:
        bad = active & ~torch.isfinite(values)
        if bool(bad.any()):
            names = ", ".join(f"agent_{int(i)}" for i in acting_ids[bad][:10])
            more = f" and {int(bad.sum()) - 10} more" if int(bad.sum()) > 10 else ""
            raise NonFiniteLossError(f"non-finite {what} for {names}{more}; no weight was changed")
