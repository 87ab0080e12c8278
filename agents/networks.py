"""Per-agent networks stacked over agents: every parameter is an [N, ...] tensor, row i is agent i's.

A stacked linear layer maps x [N, M, in] to [N, M, out] with one `baddbmm` (`linear_out_in`), so N
agents' separate layers cost one batched matrix product and gradients never mix rows. M is whatever each agent
evaluates at once: 1 when acting, the T steps of a rollout window (or T * K peer slots) when learning.

A `NetworkSpec` gives the per-agent shape and initialisation of each parameter, grouped by network
(the unit of crossover in `agents.reinforce`); a `FlatLayout` packs them into one [N, D] tensor.
The layout can store the same parameter of several networks side by side (a *block*): then the
block is one view of the flat tensor, and `ParallelMLPs` evaluates several networks that share an
input as one network of the stacked width (two batched products in all, whatever their number),
while every network keeps its own named parameters for inheritance and inspection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

DTYPE = torch.float32  # the default dtype of learner parameters and activations (LearnerConfig.dtype)
_ONES: dict = {}  # (device, dtype) -> a 0-dim 1.0 there, for tanh's backward


def _one(like: torch.Tensor) -> torch.Tensor:
    """A kept 0-dim tensor 1.0 of `like`'s dtype and device."""
    key = (like.device, like.dtype)
    if key not in _ONES:
        _ONES[key] = torch.ones((), dtype=like.dtype, device=like.device)
    return _ONES[key]


@dataclass(frozen=True)
class ParamSpec:
    """One per-agent parameter: its shape without the agent axis and its initialisation.

    init = ("uniform", bound): U(-bound, bound) entries; ("constant", value): every entry = value.
    """

    shape: tuple[int, ...]
    init: tuple[str, float]


NetworkSpec = dict[str, dict[str, ParamSpec]]  # network name -> parameter name -> spec


def linear_specs(fan_in: int, fan_out: int, output_scale: float = 1.0) -> dict[str, ParamSpec]:
    """Weight [out, in] and bias [out] of a linear layer, laid out and initialised like torch.nn.Linear
    (U(+-1/sqrt(fan_in))), times `output_scale` (a small scale starts every policy near its centre)."""
    bound = output_scale / math.sqrt(fan_in)
    return {"weight": ParamSpec((fan_out, fan_in), ("uniform", bound)),
            "bias": ParamSpec((fan_out,), ("uniform", bound))}


def mlp_specs(fan_in: int, hidden: int, fan_out: int, output_scale: float = 0.1) -> dict[str, ParamSpec]:
    """One-hidden-layer tanh MLP: in -> hidden -> out (w1 [hidden, in], b1, w2 [out, hidden], b2)."""
    first, second = linear_specs(fan_in, hidden), linear_specs(hidden, fan_out, output_scale)
    return {"w1": first["weight"], "b1": first["bias"], "w2": second["weight"], "b2": second["bias"]}


class FlatLayout:
    """Where each parameter lives in one flat [N, D] tensor per population.

    Keeping all of an agent's parameters in one row makes the optimizer, the per-agent gradient
    norm and inheritance single tensor operations. Every parameter ('network.param') is one
    contiguous column range, and `views` gives the shaped [N, *shape] views (sharing the flat
    tensor's storage). `blocks` (block name -> entry names) sets the storage order: the entries of a
    block are stored one after another, so the block is one contiguous column range too, which
    `block_views` returns as [N, size] views. Without `blocks`
    the entries are stored network by network. `column_network` [D] names each column's network,
    whatever the order.
    """

    def __init__(self, spec: NetworkSpec, blocks: Optional[dict[str, Sequence[str]]] = None):
        self.spec = spec
        specs = {f"{net}.{name}": p for net, params in spec.items() for name, p in params.items()}
        if blocks is None:
            blocks = {name: (name,) for name in specs}
        listed = [name for names in blocks.values() for name in names]
        if sorted(listed) != sorted(specs):
            raise ValueError(f"blocks must list every parameter exactly once: {sorted(listed)} != {sorted(specs)}")
        self.blocks = {block: tuple(names) for block, names in blocks.items()}
        self.entries: dict[str, tuple[int, int, tuple[int, ...]]] = {}  # name -> (start, stop, shape), storage order
        self.block_ranges: dict[str, tuple[int, int]] = {}
        network_index = {net: i for i, net in enumerate(spec)}
        column_network, low, high, constant = [], [], [], []
        offset = 0
        for block, names in self.blocks.items():
            block_start = offset
            for name in names:
                p = specs[name]
                size = math.prod(p.shape)
                self.entries[name] = (offset, offset + size, p.shape)
                offset += size
                column_network += [network_index[name.split(".", 1)[0]]] * size
                kind, value = p.init
                if kind not in ("uniform", "constant"):
                    raise ValueError(f"{name}: unknown init {kind!r}")
                low += [-value if kind == "uniform" else value] * size
                high += [value] * size
                constant += [kind == "constant"] * size
            self.block_ranges[block] = (block_start, offset)
        self.size = offset  # D, parameters per agent
        self.column_network = torch.tensor(column_network, dtype=torch.long)  # [D]
        # each network's columns as a few contiguous (start, stop) ranges (its entries, merged where adjacent)
        self.network_ranges: list[list[tuple[int, int]]] = [[] for _ in spec]
        for name, (start, stop, _) in self.entries.items():
            ranges = self.network_ranges[network_index[name.split(".", 1)[0]]]
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], stop)
            else:
                ranges.append((start, stop))
        self._entry_sizes = [stop - start for start, stop, _ in self.entries.values()]
        self._block_sizes = [stop - start for start, stop in self.block_ranges.values()]
        self._init_bounds = (low, high)
        self._init_tables: dict = {}  # dtype -> (low [D], span [D]) of the uniform draws
        self._init_constant = torch.tensor(constant)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'network.param': [N, *shape] view of flat [N, D]}, in storage order."""
        n = flat.shape[0]
        pieces = flat.split(self._entry_sizes, dim=1)
        return {name: piece.view(n, *shape) for (name, (_, _, shape)), piece in zip(self.entries.items(), pieces)}

    def block_views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{block: [N, block size] view of flat [N, D]}."""
        return dict(zip(self.block_ranges, flat.split(self._block_sizes, dim=1)))

    def init(self, count: int, generator: torch.Generator, dtype: torch.dtype = DTYPE) -> torch.Tensor:
        """[count, D] fresh parameters: one uniform draw per entry, U(-bound, bound) or the constant, on
        the CPU (`generator` is a CPU generator) in `dtype`."""
        if dtype not in self._init_tables:
            low = torch.tensor(self._init_bounds[0], dtype=dtype)
            self._init_tables[dtype] = (low, torch.tensor(self._init_bounds[1], dtype=dtype) - low)
        low, span = self._init_tables[dtype]
        draw = torch.rand(count, self.size, generator=generator, dtype=dtype)
        return torch.where(self._init_constant, low, draw.mul_(span).add_(low))




# Every network below is evaluated without autograd and differentiated by hand (`*_backward`): at
# the sizes of this project the cost of a step is the number of tensor operations, and a hand-written
# backward is a dozen operations where autograd's graph is several times that. Each backward follows
# the formulas autograd uses for the same forward, so the gradients are the same to the bit.
# tests/test_learners.py checks the whole gradient against autograd of a plain implementation.


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1, in place: torch's sigmoid kernel is several times faster than its
    tanh kernel on the CPUs we measured (absolute difference below 2e-7). d tanh = 1 - tanh^2."""
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def relu_hidden(items: torch.Tensor, shared: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A stacked relu layer over one set per agent: relu(items[n, 0, k] @ weight_n + shared[n]).

    items [N, 1, K, in], shared [N, 1, H], weight [N, in, H] -> [N, 1, K, H]: the shared part is the
    product's broadcast bias."""
    n, _, k, _ = items.shape
    return torch.baddbmm(shared, items.view(n, k, -1), weight).relu_().view(n, 1, k, -1)


def filter_hidden(own: torch.Tensor, peers: torch.Tensor, blocks: dict) -> torch.Tensor:
    """The social filter's relu layer [N, 1, K, A] at one step, relu(W_own own + W_peer peer_k + b), from own
    [N, 1, S], peers [N, 1, K, P] and the learner's shaped parameter views (`ReinforceLearner._shaped_blocks`,
    or a block's rows of them): what `act` computes, a blocked update recomputes, and the reference's
    cloning on other agents' windows computes (`agents.reference.window_forward`)."""
    own_part = torch.baddbmm(blocks["bias"], own, blocks["w_own"])  # [N, 1, A]
    return relu_hidden(peers, own_part, blocks["w_peer"])


def relu_scores(hidden: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """score_n . hidden[n, m, k] for hidden [N, M, K, H] (`relu_hidden` of each step) and score [N, H] -> [N, M, K]."""
    n, m, k, h = hidden.shape  # score [1, H] @ hidden^T [H, M*K] per agent: no [N, M, K, H] temporary
    return torch.bmm(score.unsqueeze(1), hidden.view(n, m * k, h).transpose(1, 2)).view(n, m, k)


MASKED_SCORE = -1e9  # the score masked peers get before the softmax: finite, so gradients stay finite


def attention_weights(scores: torch.Tensor, blocked: torch.Tensor, sink: bool = False) -> torch.Tensor:
    """Softmax of the peers' scores [..., K] over the live ones (``blocked`` True: weight 0). With ``sink`` a
    fixed score of 0 for "nobody" joins the softmax and its weight is dropped, so the peers' weights sum to
    less than 1 (`LearnerConfig.attention_sink`). `softmax_backward` is the gradient either way: the sink's
    score is a constant and it carries no features."""
    if sink:
        scores = torch.cat([scores, scores.new_zeros(*scores.shape[:-1], 1)], dim=-1)
        return torch.softmax(scores, dim=-1)[..., :-1].masked_fill(blocked, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)


def softmax_backward(grad: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gradient of the scores given grad [..., K] of their softmax weights [..., K] (last axis):
    weights * (grad - sum(grad * weights)). Masked entries (weight 0) get gradient 0."""
    return (grad - (grad * weights).sum(-1, keepdim=True)).mul_(weights)


def relu_scores_backward(grad: torch.Tensor, items: torch.Tensor, hidden: torch.Tensor, score: torch.Tensor,
                         out: Optional[torch.Tensor] = None):
    """Gradients of `relu_scores(hidden, score)` with hidden [N, M, K, H] = `relu_hidden(items, shared, weight)`
    of each step m, given grad [N, M, K]: (shared [N, M, H], weight [N, in, H], score [N, H]). The
    hidden layer's gradient [N, M, K, H] is written into `out` (a kept buffer of hidden's shape, if given:
    a fresh block this size costs more in page faults than the arithmetic on it)."""
    n, m, k, h = hidden.shape
    grad_score = torch.bmm(grad.reshape(n, 1, m * k), hidden.view(n, m * k, h)).view(n, h)
    # relu' as a float factor: hidden = relu(.) >= 0, so sign(hidden) is 1 or 0 (0 at 0, as autograd);
    # boolean masks over this tensor were measured 5-20x slower than sign and a multiply
    grad_hidden = torch.sign(hidden, out=out)
    grad_hidden.mul_(score[:, None, None, :]).mul_(grad.unsqueeze(-1))  # [N, M, K, H]
    grad_weight = torch.bmm(items.reshape(n, m * k, -1).transpose(1, 2), grad_hidden.view(n, m * k, h))
    return grad_hidden.sum(2), grad_weight, grad_score


class ParallelMLPs:
    """G one-hidden-layer tanh MLPs (width H each) that read the same input, evaluated as one.

    Network g maps x [N, M, in] to tanh(x w1_g^T + b1_g) w2_g^T + b2_g [N, M, out_g]. Stored as
    blocks (see `FlatLayout`): w1 [G*H, in], b1 [G*H], w2 [sum out_g, H], b2 [sum out_g], network by
    network (weights [out, in] as in torch.nn.Linear, so each network's weight is contiguous). The
    first layers are one product with the stacked w1; the second layers are one product of every
    network's hidden units with every network's w2 (G times the work of G small products, in one
    operation), of which `order` picks each output from its own network.

    order: (network, output) pairs giving the order of the returned outputs (default: network by network).
    """

    def __init__(self, hidden: int, out_sizes: Sequence[int], order: Optional[Sequence[tuple[int, int]]] = None,
                 device: torch.device | str = "cpu"):
        self.hidden, self.out_sizes = hidden, tuple(out_sizes)
        self.count, self.out_total = len(self.out_sizes), sum(self.out_sizes)
        starts = [sum(self.out_sizes[:g]) for g in range(self.count)]
        if order is None:
            order = [(g, o) for g, size in enumerate(self.out_sizes) for o in range(size)]
        if sorted(order) != [(g, o) for g, size in enumerate(self.out_sizes) for o in range(size)]:
            raise ValueError(f"order must list every (network, output) pair once, got {order}")
        # into [G * sum out], on the device of the tensors it indexes
        self.pick = torch.tensor([g * self.out_total + starts[g] + o for g, o in order], device=device)
        self._grad_every: dict[tuple[int, int], torch.Tensor] = {}  # zeros but at `pick`, by (N, M)

    def __call__(self, x: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor,
                 b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, M, in]; w1t [N, in, G*H]; b1 [N, 1, G*H]; w2t [N, H, sum out]; b2 [N, 1, sum out] (w1t and w2t
        are the transposed views of the stored blocks). Returns the outputs [N, M, sum out] in `order` and
        the hidden layer [N, M, G*H] (for `backward`)."""
        n, m, _ = x.shape
        hidden = self.hidden_layer(x, w1t, b1)  # [N, M, G*H]
        every = torch.baddbmm(b2, hidden.view(n, m * self.count, self.hidden), w2t)  # [N, M*G, sum out]
        return every.view(n, m, self.count * self.out_total).index_select(2, self.pick), hidden

    @staticmethod
    def hidden_layer(x: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
        """The hidden layer [N, M, G*H] alone (what the call computes first: a learner that did not keep it
        recomputes it by the same operations)."""
        return tanh_(torch.baddbmm(b1, x, w1t))

    def backward(self, grad: torch.Tensor, x: torch.Tensor, hidden: torch.Tensor, w1: torch.Tensor,
                 w2: torch.Tensor):
        """Gradients given grad [N, M, sum out] of the outputs: (w1 [N, G*H, in], b1 [N, 1, G*H],
        w2 [N, sum out, H], b2 [N, 1, sum out], x [N, M, in])."""
        n, m, _ = x.shape
        grad_every = self._grad_every.get((n, m))
        if grad_every is None:  # index_copy_ below writes the same entries every time: the rest stays 0
            grad_every = self._grad_every[(n, m)] = grad.new_zeros(n, m, self.count * self.out_total)
        grad_every = grad_every.index_copy_(2, self.pick, grad).view(n, m * self.count, self.out_total)
        hidden_rows = hidden.view(n, m * self.count, self.hidden)
        grad_w2 = torch.bmm(grad_every.transpose(1, 2), hidden_rows)
        # d tanh = 1 - tanh^2, as autograd computes it (one fused multiply-add): grad * (1 - hidden * hidden)
        tanh_slope = torch.addcmul(_one(hidden), hidden, hidden, value=-1.0)
        grad_pre = torch.bmm(grad_every, w2).view(n, m, -1).mul_(tanh_slope)
        grad_w1 = torch.bmm(grad_pre.transpose(1, 2), x)
        return grad_w1, grad_pre.sum(1, keepdim=True), grad_w2, grad_every.sum(1, keepdim=True), torch.bmm(grad_pre, w1)
