"""Independent per-agent REINFORCE, computed batched over agent slots (docs/design.md section 5).

Networks (each agent owns all five; every parameter is stacked [N, ...], see `agents.networks`):
    social_filter_net  score of peer k = v . relu(W_own own + W_peer peer_k + b); softmax over live
                       peers (`peer_mask`); context = attention-weighted mean of peer features [P]
    broadcast_net      [own, context] -> mean of the broadcast pre-image u_b [B]
    production_net     [own, context] -> job logits [J] and mean of the effort pre-image u_e [1]; in a
                       spatial world (docs/design.md section 13) also 5 move logits (stay, N, S, W, E)
    trading_net        [own, context] -> mean of the trade-weight pre-image u_t [R - 1]
    consumption_net    [own, context] -> mean of the consumption pre-image u_c [R]
Each Gaussian head also owns a state-independent log std per dimension.

The four head networks read the same input, so they are evaluated as one (`ParallelMLPs`): their
parameters are stored side by side in each agent's parameter row (all four first-layer weights,
then all first-layer biases, ...), one view per kind for the batched products, while each network
keeps its own named parameters (`params["trading_net.w1"]` ...) and its own crossover coin.

Policy: job ~ Categorical(logits) (in a spatial world also move ~ Categorical(move logits), independent
of the job given the state); u ~ Normal(mean, std) squashed into the action boxes:
    broadcast = tanh(u_b)                        (tanh-Normal, in (-1, 1))
    effort    = sigmoid(u_e)                     (logit-normal, in (0, 1))
    trade     = softmax([u_t, 0])                (additive logistic-normal on the simplex)
    consume   = sigmoid(u_c)                     (logit-normal per resource)
The learner stores u, so no inverse squashing is ever needed. Setting `deterministic = True` (evaluation,
e.g. `evaluate.py --no-learn --deterministic`) makes `act` take the mode instead of sampling: the
most likely job and u = the Gaussian means (so each squashed action is its distribution's median).
The loss uses the log density of u
(one Gaussian over all G continuous dimensions) in place of the density of the squashed action: the
two differ by the log Jacobian of the squashing, which has no parameters, so the gradient is the
same. The entropy bonus is the categorical entropy plus the entropy of the Gaussian pre-images (the
squashed densities have no closed form).

Inputs: holdings (own and peers') enter as log1p(holdings), so rich agents do not saturate tanh.
The social filter's hidden layer is relu, not tanh: it runs over N x K peers x width, the hot spot.

Learning. An agent's life is its episode. The learner writes each step's inputs and pre-images into
preallocated window buffers of `update_every` steps ([N, T, ...], filled in place); at the end of the
window (`agents.window`; or on a truncated step, which ends every life) it takes one REINFORCE step
per agent (the math in `agents.policy_gradient`), from the activations `act` stored:
    loss_i = -mean_t [ (G_it - b_i) log pi_i(a_it) + entropy_coef * H_it ]   over agent i's valid steps
with G the discounted reward-to-go within the window and b_i the agent's own bias-corrected EMA of
its mean window return (a fresh agent's first window uses its own mean).
When an agent dies its steps in the current window are dropped: its parameters are discarded with
it (children inherit from living parents), so its last partial window can train nothing; the
newborn in its slot starts with an empty window. So a slot's valid steps are those from its
`window start` on (the step after its last death: `update` records it, and a newborn only ever
takes the slot of an agent that died in the step just recorded), no death follows a valid step
within the window, and reward-to-go is one product with a discount matrix. Nothing runs under
autograd: the forward pass is plain tensor operations and its gradient is written by hand
(`agents.policy_gradient.policy_gradient`, the layers' `*_backward` in `agents.networks`), a few dozen
operations in all, which is what a step costs at small N. Parameters update with `BatchedAdam`,
clipped per agent. A NaN/inf loss or gradient raises NonFiniteLossError naming the agents before any
change; so does a step that leaves a parameter NaN/inf, and `act` refuses to emit non-finite actions.

Births (`config.inheritance`, see `agents.inheritance`; "genetic" is the default and is described
here): each of a newborn's five networks is copied whole from one of its two parents, chosen by a
fair coin per network (crossover at the network level keeps each network's hidden units coherent,
whereas mixing entries of two unrelated networks scrambles them; the networks only talk through
fixed-meaning interfaces: attention over raw peer features and the [own, context] input), then
every entry gets N(0, param_mutation^2) noise. Founders (no parents) get fresh random networks.
Either way the newborn's optimizer state and baseline are fresh.

With `uniform_attention=True` (the ablation) there is no social_filter_net: the context is the plain
mean over live peers; everything else is identical.

Space (`EconomyConfig.spatial`): the own features end with the region's coordinates and last prices
(`agents.spatial`), production_net has 5 more outputs, the move logits (returned after the job's:
[job J | move 5 | tokens | Gaussian means]), the move is drawn after the job (one uniform, inverse CDF),
kept in the window and saved with it, and its log-probability and entropy join the loss with the
job's gradient form. Outside a spatial world none of this exists (no parameter, no draw), so the
learner's parameters, draws and trajectories are those of the learner before space.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional

import torch

from agents.base import NonFiniteLossError
from agents.baselines import uniform_attention_weights
from agents.config import LearnerConfig, learner_device
from agents.inheritance import NewbornNetworks
from agents.networks import (
    MASKED_SCORE,
    FlatLayout,
    ParallelMLPs,
    ParamSpec,
    attention_weights,
    filter_hidden,
    mlp_specs,
    relu_scores,
)
from agents.optim import BatchedAdam, clip_coefficients
from agents.policy_gradient import LOG_STD_RANGE, advantages, discount_matrix, policy_gradient, reinforce_loss
from agents.reference import ReferenceAnchor
from agents.spatial import NUM_MOVES
from agents.spatial import self_dims as spatial_self_dims
from agents.window import RolloutWindow
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput, signals
from homoecon_env.core.lifecycle import ALIVE, Births

HEAD_NETWORKS = ("broadcast_net", "production_net", "trading_net", "consumption_net")
__all__ = ["ReinforceLearner", "double_season_angle", "reinforce_loss", "sample_tokens"]


def sample_tokens(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[N, L] int64 tokens, token l of row i drawn from softmax(logits[i, l]) for logits [N, L, V]: one
    uniform per token, inverse CDF (the job's draw)."""
    n, length, vocab = logits.shape
    cumulative = torch.softmax(logits, dim=-1).cumsum_(dim=-1)  # [N, L, V]
    # drawn on the CPU (the learner's generator), then moved: every device draws the same numbers
    uniform = torch.rand(n, length, 1, generator=generator, dtype=logits.dtype).to(logits.device)
    return (cumulative[..., :vocab - 1] < uniform).sum(dim=-1)  # never past V - 1


def double_season_angle(own: torch.Tensor, num_jobs: int, end: int) -> torch.Tensor:
    """Replace, in place, the season features that end at column `end` of own [..., S], (sin, cos) of every
    job's season angle theta [J each], by (sin 2 theta, cos 2 theta): the phase of the production factor
    cos^2 theta, whose period is half the angle's (see agents.ppo). Returns own."""
    sin, cos = own[..., end - 2 * num_jobs:end - num_jobs], own[..., end - num_jobs:end]
    doubled = torch.cat([2.0 * sin * cos, cos * cos - sin * sin], dim=-1)
    own[..., end - 2 * num_jobs:end] = doubled
    return own


class ReinforceLearner:
    """N independent REINFORCE agents in one set of stacked tensors. See the module docstring."""

    season_double_angle = False  # PPO's season input (agents.ppo); REINFORCE reads the raw angle
    # Above this many slots an update runs a block of this many agents at a time (`_learn`): the gradient
    # and the social filter's relu layer (recomputed, not kept from act) then exist for one block only
    update_rows = 8192
    # In a compact window (`compact_window`) act computes the social filter's relu layer a block of this many
    # slots at a time (fewer, larger operations than update_rows: each waits on both threads)
    filter_rows = 32768
    # Above `update_rows` slots the window is compact: it keeps the peers as each step's rows into one table [N, P]
    # (`agents.window`, K times smaller than [N, T, K, P]) and not the heads' hidden layer, and a blocked update
    # rebuilds a block's peers and recomputes its hidden layer (as it does the social filter's relu layer); act
    # runs the social filter a block of slots at a time. False keeps the window whole (a learner whose update
    # reads the whole window at once, agents.ppo)
    compact_window = True
    # The actions cross back to the CPU as one packed tensor (`_actions_to_cpu`): None packs them where the
    # learner's device is not the CPU (one synchronised copy instead of five); on the CPU nothing crosses, and
    # packing would cost about 40 us an act at 50 agents (an eighth of it). True forces it (tests); False
    # returns them on the learner's device, and the economy moves each
    pack_actions: Optional[bool] = None
    # LearnerConfig.reference works through REINFORCE's update (`agents.reference`); a subclass with its own sets False
    supports_reference = True

    def __init__(self, economy_config: EconomyConfig, learner_config: Optional[LearnerConfig] = None,
                 uniform_attention: bool = False):
        self.economy_config = c = economy_config
        self.config = learner_config or LearnerConfig()
        self.uniform_attention = bool(uniform_attention)
        # where the tensors live and their float type (docs/design.md section 5, "Learners on a GPU")
        self.device, self.dtype = learner_device(self.config.device), self.config.torch_dtype
        r, b, j = c.num_resources, c.message_width, c.num_jobs
        self.num_slots, self.num_peer_slots = c.num_agents, c.peers_observed
        extra_self, extra_peer = signals.extra_dims(c)  # private signals' columns (docs/design.md section 11)
        self.spatial = c.spatial  # a world of regions: the move head exists (docs/design.md section 13)
        self.season_end = 2 * r + 2 + b + c.id_dim + 2 * j  # the season's (sin, cos) end here (extra columns follow)
        # S, layout in homoecon_env.core.observe: private signals' columns, then the spatial ones
        self.self_dim = self.season_end + extra_self + spatial_self_dims(c)
        self.peer_dim = b + c.id_dim + r + extra_peer  # P
        # symbolic mode: the broadcast head is L categoricals of V logits each (no Gaussian part)
        self.message_length, self.vocab_size = (c.message_length, c.vocab_size) if c.symbolic else (0, 0)
        self.token_width = self.message_length * self.vocab_size  # L * V token logits (0: continuous)
        self.move_width = NUM_MOVES if self.spatial else 0  # the move head's logits, after the job's
        self.categorical_width = j + self.move_width + self.token_width  # C, logits before the Gaussian means
        # G layout of the Gaussian pre-images: the two sigmoid heads are adjacent, trade comes last
        self.head_dims = {"broadcast": 0 if c.symbolic else b, "effort": 1, "consume": r, "trade_weights": r - 1}
        self.gaussian_dim = sum(self.head_dims.values())  # G
        ends = itertools.accumulate(self.head_dims.values())
        self.head_slices = {head: (end - size, end) for (head, size), end in zip(self.head_dims.items(), ends)}
        self.spec = self._network_spec()
        self.layout = FlatLayout(self.spec, self._blocks())
        # production_net's outputs are J job logits, the effort mean, then (spatial worlds) 5 move logits;
        # the heads' outputs are returned as [job logits J | Gaussian means in the G layout], in the
        # symbolic mode as [job logits J | token logits L * V | Gaussian means]: broadcast_net's b outputs
        # are L * V logits; in a spatial world the 5 move logits follow the job's
        m = self.move_width
        self.heads = ParallelMLPs(self.config.hidden_size, [b, j + 1 + m, r - 1, r],
                                  order=[(1, o) for o in range(j)] + [(1, j + 1 + o) for o in range(m)]
                                  + [(0, o) for o in range(b)] + [(1, j)]
                                  + [(3, o) for o in range(r)] + [(2, o) for o in range(r - 1)], device=self.device)
        # a CPU generator whatever the device: draws are made on the CPU and moved, so that every device
        # draws the same numbers (and its state is a checkpoint's plain tensor)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        # [N, D] row i = agent i's parameters
        self.flat_params = self.layout.init(self.num_slots, self.generator, self.dtype).to(self.device)
        self.params = self.layout.views(self.flat_params)  # {'network.param': [N, *shape]} views of flat_params
        self._blocks_now = self._shaped_blocks(self.layout.block_views(self.flat_params))  # views, made once
        self.optimizer = BatchedAdam([self.flat_params], lr=self.config.learning_rate,
                                     betas=(self.config.adam_beta1, self.config.adam_beta2), eps=self.config.adam_eps)
        # where each update's gradient is written (no fresh [N, D]): one block of `update_rows` agents' rows
        self._grad = torch.empty(min(self.num_slots, self.update_rows), self.layout.size, dtype=self.dtype,
                                 device=self.device)
        self._relu_scratch = None  # [2, B * T, K, A] the recomputed relu layer of a block and its gradient
        # newborns' networks (agents.inheritance), written into their rows of flat_params
        self.newborns = NewbornNetworks(self.layout, self.config.inheritance, self.config.param_mutation,
                                        self.dtype, self.device)
        on = {"device": self.device}
        self.baseline = torch.zeros(self.num_slots, dtype=torch.float64, **on)  # [N] EMA of mean window return
        self.baseline_updates = torch.zeros(self.num_slots, dtype=torch.int64, **on)  # [N] EMA terms so far
        self._last_attention = torch.zeros(self.num_slots, self.num_peer_slots, **on)  # [N, K]
        self._step_index = torch.arange(self.config.update_every, **on)  # [T]
        self._discount = discount_matrix(self.config.update_every, self.config.gamma).to(self.device)  # [T, T]
        self._wealth = None  # [N] cultural inheritance's prestige: each slot's holdings summed, at its last act
        self.last_teachers = None  # [N] after a cultural birth: each newborn's teacher slot (-1 elsewhere)
        self._compact = self.compact_window and self.num_slots > self.update_rows  # (see `compact_window`)
        self._hidden_scratch = None  # [B * T * 4H] a block's recomputed hidden layer (compact window)
        self.window = RolloutWindow(self.num_slots, self.config.update_every, self.num_peer_slots, self.self_dim,
                                    self.peer_dim, self.head_slices, self.categorical_width, r,
                                    self.heads.count * self.heads.hidden,
                                    None if self.uniform_attention else self.config.attention_hidden_size,
                                    message_length=self.message_length, moves=self.spatial,
                                    keep_relu=self.num_slots <= self.update_rows,
                                    peer_table=self._compact, keep_hidden=not self._compact,
                                    mean_context=self.mean_context, dtype=self.dtype, device=self.device)
        self._t = 0  # steps stored in the current window
        # LearnerConfig.reference: a warm start cloning a hand-written policy, then an anchor towards it
        self.reference = None
        if self.config.reference != "none":
            if not self.supports_reference:
                raise ValueError(f"reference: {self.config.reference!r} is for the REINFORCE learners (reinforce, "
                                 f"uniform_attention), not {type(self).__name__}; use reference none")
            self.reference = ReferenceAnchor(self)
        # act with the policy's mode instead of sampling (frozen evaluation; see `act`). Not saved in
        # state_dict: it is how the policy is used, not what it learnt
        self.deterministic = False

    # -- structure ---------------------------------------------------------------------------
    def _network_spec(self) -> dict:
        s, p, h, log_std = self.self_dim, self.peer_dim, self.config.hidden_size, self.config.init_log_std
        # [own, context(, plain mean)]: uniform attention's context already is the plain mean
        self.mean_context = self.config.mean_context and not self.uniform_attention
        self.heads_in = s + p * (2 if self.mean_context else 1)
        spec = {}
        if not self.uniform_attention:
            bound, a = 1.0 / math.sqrt(s + p), self.config.attention_hidden_size
            spec["social_filter_net"] = {
                "w_own": ParamSpec((s, a), ("uniform", bound)), "w_peer": ParamSpec((p, a), ("uniform", bound)),
                "bias": ParamSpec((a,), ("uniform", bound)), "score": ParamSpec((a,), ("uniform", 1.0 / math.sqrt(a)))}
        outputs = {"broadcast_net": (self.head_dims["broadcast"] + self.token_width, self.head_dims["broadcast"]),
                   "production_net": (self.economy_config.num_jobs + 1 + self.move_width, 1),
                   "trading_net": (self.head_dims["trade_weights"],) * 2,
                   "consumption_net": (self.head_dims["consume"],) * 2}
        for net, (out, gaussian) in outputs.items():
            spec[net] = mlp_specs(self.heads_in, h, out)
            if gaussian:  # (the symbolic broadcast head has none)
                spec[net]["log_std"] = ParamSpec((gaussian,), ("constant", log_std))
        return spec

    def _blocks(self) -> dict:
        """Storage order of the parameter row: the social filter's entries, then the head networks'
        entries kind by kind (log stds in the G layout: broadcast, effort, consume, trade)."""
        blocks = {} if self.uniform_attention else {f"social_filter_net.{name}": (f"social_filter_net.{name}",)
                                                    for name in self.spec["social_filter_net"]}
        for kind in ("w1", "b1", "w2", "b2"):
            blocks[f"heads.{kind}"] = tuple(f"{net}.{kind}" for net in HEAD_NETWORKS)
        blocks["heads.log_std"] = tuple(f"{net}.log_std" for net in
                                        ("broadcast_net", "production_net", "consumption_net", "trading_net")
                                        if "log_std" in self.spec[net])
        return blocks

    def _shaped_blocks(self, blocks: dict) -> dict:
        """The [N, size] blocks shaped for the forward pass (views; transposed views of the weights)."""
        n = next(iter(blocks.values())).shape[0]
        s, p, h, a = self.self_dim, self.peer_dim, self.config.hidden_size, self.config.attention_hidden_size
        count, outputs = self.heads.count, self.heads.out_total
        shaped = {"w1": blocks["heads.w1"].view(n, count * h, self.heads_in),  # [N, 4H, in]
                  "b1": blocks["heads.b1"].view(n, 1, count * h),
                  "w2": blocks["heads.w2"].view(n, outputs, h),  # [N, O, H]
                  "b2": blocks["heads.b2"].view(n, 1, outputs),
                  "log_std": blocks["heads.log_std"]}  # [N, G]
        shaped["w1t"], shaped["w2t"] = shaped["w1"].transpose(1, 2), shaped["w2"].transpose(1, 2)
        if not self.uniform_attention:
            shaped.update({"w_own": blocks["social_filter_net.w_own"].view(n, s, a),
                           "w_peer": blocks["social_filter_net.w_peer"].view(n, p, a),
                           "bias": blocks["social_filter_net.bias"].view(n, 1, a),
                           "score": blocks["social_filter_net.score"]})  # [N, A]
        return shaped

    # -- policy ------------------------------------------------------------------------------
    def _act_forward(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every slot's policy at window step t, from the step's stored inputs; stores the activations
        `policy_gradient` needs (the heads' input and hidden layer, the social filter's relu layer and the
        attention). Returns the heads' output [N, 1, J + G] (job logits, Gaussian means) and the attention
        [N, 1, K]."""
        views, blocks = self.window.step_views[t], self._blocks_now
        peers, blocked = views["peers"], views["blocked"]
        if self.uniform_attention:
            attention = uniform_attention_weights((~blocked).to(self.dtype))
        else:
            scores = self._filter_scores(views, blocks).masked_fill_(blocked, MASKED_SCORE)
            attention = attention_weights(scores, blocked, self.config.attention_sink)
        views["attention"].copy_(attention)
        views["context"].copy_(torch.bmm(attention, peers.squeeze(1)))  # [N, 1, P]
        if "mean_context" in views:  # LearnerConfig.mean_context: the plain mean beside the learned context
            weights = uniform_attention_weights((~blocked).to(self.dtype))
            views["mean_context"].copy_(torch.bmm(weights, peers.squeeze(1)))
        out, hidden = self.heads(views["x"], blocks["w1t"], blocks["b1"], blocks["w2t"], blocks["b2"])
        if "hidden" in views:  # kept for learning (else `_window_block` recomputes it a block at a time)
            views["hidden"].copy_(hidden)
        views["out"].copy_(out)
        return out, attention

    def _filter_scores(self, views: dict, blocks: dict) -> torch.Tensor:
        """The social filter's scores [N, 1, K] of a step's peers (before masking). Its relu layer [N, 1, K, A]
        is kept in the window where the window has room for it; otherwise, in a compact window, it is
        computed a block of `filter_rows` slots at a time (0.2 GB at 100,000 agents, K = 32: a block's is a
        quarter of that), by the same operations row by row."""
        if not self._compact:
            relu = filter_hidden(views["own"], views["peers"], blocks)  # [N, 1, K, A]
            if "relu" in views:  # kept for learning (else `_learn` recomputes it a block of agents at a time)
                views["relu"].copy_(relu)
            return relu_scores(relu, blocks["score"])
        n = self.num_slots
        scores = torch.empty(n, 1, self.num_peer_slots, dtype=self.dtype, device=self.device)
        count = -(-n // self.filter_rows)
        for index in range(count):  # blocks of agents of nearly equal sizes
            block = slice(n * index // count, n * (index + 1) // count)
            part = {key: blocks[key][block] for key in ("w_own", "w_peer", "bias", "score")}
            relu = filter_hidden(views["own"][block], views["peers"][block], part)
            scores[block] = relu_scores(relu, part["score"])
        return scores

    # -- Learner protocol --------------------------------------------------------------------
    def act(self, observation: Observation) -> Actions:
        """Sample every slot's actions with the learner's generator and store them in the window. With
        `deterministic` set, act with the policy's mode instead: the most likely job and the Gaussian means
        (squashed: the median of each squashed action), drawing nothing from the generator."""
        own, own_holdings, peers, peer_holdings, blocked, peer_rows, pre_image, job_slot, broadcast_u, sigmoid_u, \
            trade_u = self.window.act_slots[self._t]
        r = self.economy_config.num_resources
        # the observation crosses to the learner's device once (on the CPU `.to` returns the tensor itself)
        # (the features in the learner's dtype first, so that every device computes log1p in that dtype)
        device, dtype = self.device, self.dtype
        self_features = observation.self_features.to(device, dtype, non_blocking=True)
        peer_mask = observation.peer_mask.to(device, non_blocking=True)
        peer_index = observation.peer_index.to(device, non_blocking=True)
        own.copy_(self_features)
        if self.season_double_angle:  # PPO's season input (agents.ppo)
            double_season_angle(own, self.economy_config.num_jobs, self.season_end)
        torch.log1p(self_features[:, :r].clamp(min=0), out=own_holdings)
        # a compact window keeps the public table the peers come from (no [N, K, P] gathered); else the peers
        if not self.window.keep_source_peers(self._t, observation.peer_source):
            observed_peers = observation.peers.to(device, dtype, non_blocking=True)
            peers.copy_(observed_peers)
            peer_rows.copy_(peer_index)  # lets the window (and a checkpoint) keep peers as rows of one table per step
            peer_holdings.copy_(observed_peers[..., -r:].clamp(min=0).log1p_())  # log1p on a contiguous copy
            self.window.keep_peers(self._t)
        torch.le(peer_mask.unsqueeze(1), 0, out=blocked)
        if self.config.inheritance == "cultural":  # prestige for on_births (agents.inheritance), kept on the CPU
            self._wealth = observation.self_features[:, :r].sum(1, dtype=torch.float64)
        out, attention = self._act_forward(self._t)
        n, j = self.num_slots, self.economy_config.num_jobs
        out = out.view(n, -1)
        if not bool(torch.isfinite(out.sum())):  # huge but finite weights (a diverged policy) give NaN here
            self._refuse_non_finite_actions(out)  # (a finite sum proves every entry finite)
        m = self.move_width
        if self.deterministic:  # the mode: Gaussian means, most likely job (and move, tokens); draws nothing
            pre_image.copy_(out[:, self.categorical_width:])
            job = out[:, :j].argmax(dim=1)
            move = out[:, j:j + m].argmax(dim=1) if m else None
        else:
            std = self._blocks_now["log_std"].clamp(*LOG_STD_RANGE).exp_()  # [N, G]
            # every draw on the CPU (the learner's generator), then moved: each device draws the same numbers
            noise = torch.randn(n, self.gaussian_dim, generator=self.generator, dtype=self.dtype).to(self.device)
            torch.addcmul(out[:, self.categorical_width:], std, noise, out=pre_image)  # u = mean + std * noise, [N, G]
            cumulative = torch.softmax(out[:, :j], dim=1).cumsum_(dim=1)  # [N, J], inverse-CDF draw
            uniform = torch.rand(n, 1, generator=self.generator, dtype=self.dtype).to(self.device)
            job = (cumulative[:, :j - 1] < uniform).sum(dim=1)  # the first J - 1 entries: never past J - 1
            move = sample_tokens(out[:, None, j:j + m], self.generator).view(n) if m else None  # the job's draw
        job_slot.copy_(job)
        if self.reference is not None:  # what the reference would do here, for the update (agents.reference)
            self.reference.record(self._t, observation)
        if m:
            self.window.move_slots[self._t].copy_(move)
        if self.message_length:  # symbolic: L tokens, each an inverse-CDF draw from its V logits
            logits = out[:, j + m:self.categorical_width].view(n, self.message_length, self.vocab_size)
            broadcast = logits.argmax(-1) if self.deterministic else sample_tokens(logits, self.generator)  # [N, L]
            self.window.token_slots[self._t].copy_(broadcast)
        else:
            broadcast = torch.tanh(broadcast_u)
        self._last_attention = attention.view(n, self.num_peer_slots)
        squashed = torch.sigmoid(sigmoid_u)  # [N, 1 + R]: effort, consume
        trade_weights = torch.softmax(trade_u, dim=1)
        if self.pack_actions or (self.pack_actions is None and self.device.type != "cpu"):
            return self._actions_to_cpu(broadcast, job, squashed, trade_weights, move)
        # as they are: on the CPU (else the economy moves each, `homoecon_env.core.actions.as_array`)
        return Actions(broadcast=broadcast, job=job, effort=squashed[:, 0], trade_weights=trade_weights,
                       consume=squashed[:, 1:], move=move)

    def driving_actions(self, actions: Actions) -> Actions:
        """What a learning step executes (`agents.base.executed_actions`): in the reference's warm start the
        reference's actions, which the update then clones (`agents.reference`); else `actions`, the learner's own."""
        if self.reference is not None and self.reference.warm_now:
            return self.reference.actions
        return actions

    def _actions_to_cpu(self, broadcast: torch.Tensor, job: torch.Tensor, squashed: torch.Tensor,
                        trade_weights: torch.Tensor, move: Optional[torch.Tensor]) -> Actions:
        """The actions, which cross back to the CPU as one [N, W] tensor (the integer job, move and tokens
        as floats: exact, they are small) whose column views they become: broadcast [N, B] (tokens [N, L]),
        job, effort and consume (`squashed` [N, 1 + R]), trade weights [N, R], move."""
        parts = [broadcast.to(self.dtype), job.unsqueeze(1).to(self.dtype), squashed, trade_weights]
        if move is not None:
            parts.append(move.unsqueeze(1).to(self.dtype))
        pieces = torch.cat(parts, dim=1).to("cpu").split([part.shape[1] for part in parts], dim=1)  # views
        return Actions(broadcast=pieces[0].long() if self.message_length else pieces[0], job=pieces[1].view(-1).long(),
                       effort=pieces[2][:, 0], trade_weights=pieces[3], consume=pieces[2][:, 1:],
                       move=None if move is None else pieces[4].view(-1).long())

    @property
    def last_attention(self) -> torch.Tensor:
        """[N, K] each slot's attention over its peer slots at the last `act`, on the CPU (moved when read)."""
        return self._last_attention.to("cpu")

    @last_attention.setter
    def last_attention(self, value: torch.Tensor) -> None:
        self._last_attention = value.to(self.device)

    def update(self, step: StepOutput) -> dict:
        """Record the step's rewards and deaths; at the end of a window or on truncation, learn."""
        t = self._t
        if self.reference is not None:
            self.reference.steps += 1
        self.window.rewards[t].copy_(step.reward)
        # a dead agent's window trains nothing (its parameters are discarded): its slot starts afresh
        self.window.window_start.masked_fill_((step.death_cause != ALIVE).to(self.device), t + 1)
        self._t = t + 1
        if self._t < self.config.update_every and not step.truncated:
            return {}
        metrics = self._learn_window(step)
        self._clear_window()
        return metrics

    def _learn_window(self, step: StepOutput) -> dict:
        """Learn from the full window; `step` is its last step. Subclasses with another update override it."""
        return self._learn(step.acting_ids)  # raises before any change on a non-finite loss or gradient

    def on_births(self, births: Births) -> None:
        """Newborn slots get their networks by `config.inheritance` (`agents.inheritance`: genetic, crossed-over,
        mutated copies of their parents'; cultural, a copy of a teacher's, recorded in `last_teachers`; none,
        fresh), fresh ones for founders, and a fresh baseline. Their optimizer state is fresh, or with
        `inherit_optimizer` the mean of the Adam moments of the agents their networks came from (both parents;
        the teacher) with the larger step count. (Their window is already empty: a newborn takes the slot of an
        agent that died in the step `update` just recorded.)"""
        self.last_teachers = None
        rows = births.born.nonzero().view(-1)  # [C] on the CPU (the economy's)
        if rows.numel() == 0:
            return
        on_device = rows.to(self.device)
        sources, self.last_teachers = self.newborns.write(self.flat_params, births, rows, on_device, self.generator,
                                                          self._wealth)
        if self.config.inherit_optimizer and sources is not None:
            self.optimizer.inherit_rows(on_device, *sources)
        else:
            self.optimizer.reset_rows(on_device)
        self.baseline.index_fill_(0, on_device, 0.0)
        self.baseline_updates.index_fill_(0, on_device, 0)

    def state_dict(self) -> dict:
        """What a bit-exact resume needs, as plain data (tensors, numbers, strings, dicts, tuples): the
        parameters, optimizer state, baselines, the filled steps of the window and the generator.

        CPU tensors whatever the learner's device. On the CPU not copies: the parameters, the optimizer's
        moments and the small per-slot tensors are the live tensors (a checkpoint writes them right away;
        copy.deepcopy the result to keep it across a learning step). Not saved: the activations of the
        window, which `load_state_dict` recomputes.
        """
        cpu = torch.device("cpu")
        return {
            "kind": "uniform_attention" if self.uniform_attention else "reinforce",
            "params": self.flat_params.to(cpu),  # [N, D]
            "param_layout": {name: (start, stop) for name, (start, stop, _) in self.layout.entries.items()},
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.to(cpu),
            "baseline_updates": self.baseline_updates.to(cpu),
            "window": self.window.state_dict(self._t),
            "window_step": self._t,
            "generator": self.generator.get_state(),
            "last_attention": self.last_attention,
            **({"reference": self.reference.state_dict(self._t)} if self.reference is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (copied in; the state may be reused). ValueError naming
        the entry when it does not fit this learner."""
        kind = "uniform_attention" if self.uniform_attention else "reinforce"
        if state.get("kind") != kind:
            raise ValueError(f"learner state is for {state.get('kind')!r}, this learner is {kind!r}")
        layout = {name: (start, stop) for name, (start, stop, _) in self.layout.entries.items()}
        if state["param_layout"] != layout or state["params"].shape != self.flat_params.shape:
            raise ValueError(f"learner state has parameters {tuple(state['params'].shape)} laid out as "
                             f"{state['param_layout']}, expected {tuple(self.flat_params.shape)} laid out as {layout} "
                             "(num_agents, hidden_size or the economy's sizes differ, or the state was saved by an "
                             "older version of this learner)")
        if state["params"].dtype != self.flat_params.dtype:
            raise ValueError(f"learner state has {state['params'].dtype} parameters, this learner's dtype is "
                             f"{self.config.dtype} (the state was saved with another --learner-dtype)")
        for key in ("baseline", "baseline_updates"):
            mine, theirs = getattr(self, key), state[key]
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                raise ValueError(f"learner state's {key!r} is {(tuple(theirs.shape), theirs.dtype)}, expected "
                                 f"{(tuple(mine.shape), mine.dtype)}")
        if self.reference is not None:  # (checked before anything is copied)
            self.reference.check_state(state.get("reference"), state["window_step"])
        elif "reference" in state:
            raise ValueError("learner state has a 'reference' entry (LearnerConfig.reference) but this learner has "
                             "no reference")
        self._t = self.window.load_state_dict(state["window"])  # checks its shapes before copying
        self.optimizer.load_state_dict(state["optimizer"])
        self.flat_params.copy_(state["params"])  # from any device (a checkpoint's are on the CPU)
        self.baseline = state["baseline"].to(self.device, copy=True)
        self.baseline_updates = state["baseline_updates"].to(self.device, copy=True)
        for step in range(self._t):  # what act stored; valid steps were acted with these parameters
            self.window.load_step_peers(step)
            self._act_forward(step)
        self.generator.set_state(state["generator"])
        self.last_attention = state["last_attention"].to(self.device, copy=True)
        if self.reference is not None:
            self.reference.load_state_dict(state.get("reference"))

    # -- learning ----------------------------------------------------------------------------
    def _clear_window(self) -> None:
        self._t = 0
        self.window.clear()

    def _learn(self, acting_ids: torch.Tensor) -> dict:
        """One REINFORCE step per agent with data in the window. Raises NonFiniteLossError before any
        change on a non-finite loss or gradient, and naming the agents if a step leaves a parameter
        non-finite."""
        t = self._t
        start = self.window.window_start
        active = start < t  # [N] slots with at least one valid step
        if not bool(active.any()):
            return {}
        window = self.window.first(t)
        valid = self._step_index[:t] >= start[:, None]  # [N, T]
        counts = (t - start).clamp_(min=1)  # [N] valid steps (1 for inactive slots, whose sums are 0)
        decay = self.config.baseline_decay
        returns, window_mean, _, advantage = advantages(window["reward"], valid, counts, self._discount[:t, :t],
                                                        self.baseline, self.baseline_updates, decay,
                                                        self.config.horizon_baseline)
        advantage = advantage.to(self.dtype)  # [N, T]
        if self.reference is not None:  # the warm start's steps only clone the reference (agents.reference)
            advantage = torch.where(self.reference.warm[:t], 0.0, advantage)
        n, rows = self.num_slots, self.update_rows
        floats = {"dtype": self.dtype, "device": self.device}
        loss, entropy, norms = torch.empty(n, **floats), torch.empty(n, t, **floats), torch.empty(n, **floats)
        cloning = None if self.reference is None else torch.zeros(n, **floats)  # [N] the reference's cloning loss
        count = -(-n // rows)  # blocks of agents (one up to `update_rows`), of nearly equal sizes: never of one
        for index in range(count):  # agent, whose batched products torch computes by another kernel
            start = n * index // count
            block = slice(start, n * (index + 1) // count)
            whole = n <= rows and not self._compact  # one block, and the window holds everything
            blocks = self._blocks_now if whole else {key: value[block] for key, value in self._blocks_now.items()}
            window_block = window if whole else self._window_block(window, block, blocks)
            grad = self._learn_block(window_block, blocks, advantage[block], valid[block], counts[block],
                                     loss[block], entropy[block], norms[block])
            if self.reference is not None:  # the pull towards the reference (agents.reference)
                anchor, anchor_loss = self.reference.gradient(self, window_block, blocks, block, valid[block],
                                                              counts[block], grad)
                if anchor is not None:
                    grad += anchor
                    cloning[block] = anchor_loss
                    torch.linalg.vector_norm(grad, dim=1, out=norms[block])
            if not bool(torch.isfinite(loss[block] + norms[block]).all()):
                done = "no weight was changed" if start == 0 else \
                    f"the agents in slots below {start} took this update, no other weight was changed"
                self._refuse_non_finite(loss, active, acting_ids, "loss", done, block)
                self._refuse_non_finite(norms, active, acting_ids, "gradient", done, block)
            self.optimizer.step([grad], active[block], grad_scale=clip_coefficients(norms[block],
                                                                                    self.config.max_grad_norm),
                                start=start)
        # a step that overflows leaves weights whose next forward pass is NaN: name the agents now
        # any NaN or inf makes the sum NaN or inf (one cheap pass); only then look row by row
        if not bool(torch.isfinite(self.flat_params.sum())):
            finite = torch.isfinite(self.flat_params).all(dim=1)  # [N]
            self._refuse_non_finite(torch.where(finite, 0.0, math.nan), active, acting_ids,
                                    "parameters after the optimizer step",
                                    "the policy diverged (lower the learning rate)")

        self.baseline = torch.where(active, decay * self.baseline + (1 - decay) * window_mean, self.baseline)
        self.baseline_updates = self.baseline_updates + active
        valid_returns = torch.where(valid, returns, 0.0)
        num_active, num_valid, total, entropy_sum, norm_sum, return_sum, advantage_sum = torch.stack([
            active.sum(), valid.sum(), loss.sum(), torch.where(valid, entropy, 0.0).sum(),
            torch.where(active, norms, 0.0).sum(), valid_returns.sum(), advantage.abs().sum()]).tolist()
        reference = {} if cloning is None else {"reference_loss": float(torch.where(active, cloning, 0.0).sum())
                                                                    / num_active}
        return {
            "loss": total / num_active,
            "entropy": entropy_sum / num_valid,
            "grad_norm": norm_sum / num_active,
            "return": return_sum / num_valid,
            "advantage_abs": advantage_sum / num_valid,
            "active_agents": num_active,
            **reference,  # the cloning term of the loss (agents.reference); "loss" is REINFORCE's alone
        }

    def _learn_block(self, window: dict, blocks: dict, advantage: torch.Tensor, valid: torch.Tensor,
                     counts: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, norms: torch.Tensor):
        """The gradient [B, D] of a block of B agents' losses (`policy_gradient`); their losses [B], entropies
        [B, T] and gradient norms [B] are written into the given tensors."""
        tokens = {"vocab_size": self.vocab_size} if self.vocab_size else {}  # the symbolic mode's token heads
        scratch = self._grad[:loss.shape[0]]
        block_loss, block_entropy, grad = policy_gradient(window, blocks, self.heads, advantage, valid, counts,
                                                          self.config.entropy_coef, self.economy_config.num_jobs,
                                                          self.self_dim, scratch, **tokens)
        loss.copy_(block_loss)
        entropy.copy_(block_entropy)
        torch.linalg.vector_norm(grad, dim=1, out=norms)
        return grad

    def _window_block(self, window: dict, block: slice, blocks: dict) -> dict:
        """The window's rows of a block of agents (views), with the social filter's relu layer recomputed
        step by step as `_act_forward` computed it (`filter_hidden` with the block's parameter views `blocks`),
        into kept scratch (with its gradient's scratch); in a compact window also the heads' hidden layer
        (recomputed likewise) and the peers (`RolloutWindow.block_peers`)."""
        part = {key: value[block] for key, value in window.items()}
        if self._compact:  # the heads' hidden layer as act computed it, and the peers from the rows they showed
            b, t = part["x"].shape[0], part["x"].shape[1]
            width = self.heads.count * self.heads.hidden
            if self._hidden_scratch is None or self._hidden_scratch.numel() < b * t * width:
                self._hidden_scratch = torch.empty(max(b * t, self.update_rows * self.config.update_every) * width,
                                                   dtype=self.dtype, device=self.device)
            hidden = self._hidden_scratch[:b * t * width].view(b, t, width)
            for step in range(t):  # at most T steps: a loop over steps, not agents
                hidden[:, step:step + 1].copy_(self.heads.hidden_layer(part["x"][:, step:step + 1], blocks["w1t"],
                                                                       blocks["b1"]))
            part["hidden"] = hidden
            if not self.uniform_attention:  # (the uniform ablation's gradient does not read the peers)
                part["peers"] = self.window.block_peers(block, t)
        if self.uniform_attention:
            return part
        b, t = part["own"].shape[0], part["own"].shape[1]
        shape = (b, t, self.num_peer_slots, self.config.attention_hidden_size)
        if self._relu_scratch is None or self._relu_scratch.shape[1] < b * t:
            self._relu_scratch = torch.empty(2, self.update_rows * self.config.update_every * shape[2] * shape[3],
                                             dtype=self.dtype, device=self.device).view(2, -1, shape[2], shape[3])
        relu, relu_grad = (scratch[:b * t].view(shape) for scratch in self._relu_scratch)
        for step in range(t):  # at most T steps: a loop over steps, not agents
            relu[:, step:step + 1].copy_(filter_hidden(part["own"][:, step:step + 1],
                                                       part["peers"][:, step:step + 1], blocks))
        part.update(relu=relu, relu_grad=relu_grad)
        return part

    @staticmethod
    def _refuse_non_finite_actions(out: torch.Tensor) -> None:
        bad = (~torch.isfinite(out).all(dim=1)).nonzero().view(-1)
        if bad.numel() == 0:  # the sum overflowed, the entries are finite
            return
        slots = ", ".join(str(int(i)) for i in bad[:10]) + (f" and {bad.numel() - 10} more" if bad.numel() > 10 else "")
        raise NonFiniteLossError(f"the policy diverged: non-finite action logits or means for the agents in slots "
                                 f"{slots} (economy.state.agent_ids names them); no action was emitted")

    @staticmethod
    def _refuse_non_finite(values: torch.Tensor, active: torch.Tensor, acting_ids: torch.Tensor, what: str,
                           consequence: str, block: slice = slice(None)) -> None:
        bad = torch.zeros_like(active)
        bad[block] = active[block] & ~torch.isfinite(values[block])
        bad = bad.to(acting_ids.device)  # the learner's device, the economy's ids
        if bool(bad.any()):
            names = ", ".join(f"agent_{int(i)}" for i in acting_ids[bad][:10])
            more = f" and {int(bad.sum()) - 10} more" if int(bad.sum()) > 10 else ""
            raise NonFiniteLossError(f"non-finite {what} for {names}{more}; {consequence}")
