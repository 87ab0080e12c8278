"""Per-agent networks stacked over agents: every parameter is an [N, ...] tensor, row i is agent i's.

A stacked linear layer holds weight [N, in, out] and bias [N, out] and maps x [N, M, in] to
[N, M, out] with one `baddbmm`, so N agents' separate layers cost one batched matrix product and
gradients never mix rows. M is whatever each agent evaluates at once: 1 when acting, the T steps
of a rollout window (or T * K peer slots) when learning.

A `NetworkSpec` gives the per-agent shape and initialisation of each parameter, grouped by network
(the unit of crossover in `agents.reinforce`); a `FlatLayout` packs them into one [N, D] tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPE = torch.float32  # learner parameters and activations


@dataclass(frozen=True)
class ParamSpec:
    """One per-agent parameter: its shape without the agent axis and its initialisation.

    init = ("uniform", bound): U(-bound, bound) entries; ("constant", value): every entry = value.
    """

    shape: tuple[int, ...]
    init: tuple[str, float]


NetworkSpec = dict[str, dict[str, ParamSpec]]  # network name -> parameter name -> spec


def linear_specs(fan_in: int, fan_out: int, output_scale: float = 1.0) -> dict[str, ParamSpec]:
    """Weight and bias of a linear layer, initialised like torch.nn.Linear (U(+-1/sqrt(fan_in))),
    times `output_scale` (a small scale for policy outputs starts every policy near its centre)."""
    bound = output_scale / math.sqrt(fan_in)
    return {"weight": ParamSpec((fan_in, fan_out), ("uniform", bound)),
            "bias": ParamSpec((fan_out,), ("uniform", bound))}


def mlp_specs(fan_in: int, hidden: int, fan_out: int, output_scale: float = 0.1) -> dict[str, ParamSpec]:
    """One-hidden-layer tanh MLP: in -> hidden -> out."""
    first, second = linear_specs(fan_in, hidden), linear_specs(hidden, fan_out, output_scale)
    return {"w1": first["weight"], "b1": first["bias"], "w2": second["weight"], "b2": second["bias"]}


class FlatLayout:
    """Where each parameter lives in one flat [N, D] tensor per population.

    Keeping all of an agent's parameters in one row makes the optimizer, the per-agent gradient
    norm and inheritance single tensor operations; `views` gives the shaped [N, *shape] views that
    the forward pass uses (they share the flat tensor's storage, so gradients land in one [N, D]).
    Entries are laid out network by network, so each network is one contiguous column range.
    """

    def __init__(self, spec: NetworkSpec):
        self.spec = spec
        self.entries: dict[str, tuple[int, int, tuple[int, ...]]] = {}  # name -> (start, stop, shape)
        self.networks: dict[str, tuple[int, int]] = {}  # network -> (start, stop)
        offset = 0
        for net, params in spec.items():
            net_start = offset
            for name, p in params.items():
                size = math.prod(p.shape)
                self.entries[f"{net}.{name}"] = (offset, offset + size, p.shape)
                offset += size
            self.networks[net] = (net_start, offset)
        self.size = offset  # D, parameters per agent
        self._sizes = [stop - start for start, stop, _ in self.entries.values()]
        sizes = torch.tensor([stop - start for start, stop in self.networks.values()])
        self.column_network = torch.repeat_interleave(torch.arange(len(sizes)), sizes)  # [D] network of each column

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'network.param': [N, *shape] view of flat [N, D]}."""
        n = flat.shape[0]
        pieces = flat.split(self._sizes, dim=1)  # one split: its backward is a single cat, not one [N, D] per entry
        return {name: piece.view(n, *shape) for (name, (_, _, shape)), piece in zip(self.entries.items(), pieces)}

    def init(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """[count, D] fresh parameters, entries drawn in layout order."""
        flat = torch.empty(count, self.size, dtype=DTYPE)
        for (name, (start, stop, shape)), spec in zip(self.entries.items(), self._param_specs()):
            kind, value = spec.init
            if kind == "uniform":
                flat[:, start:stop] = (torch.rand(count, stop - start, generator=generator, dtype=DTYPE) * 2 - 1) * value
            elif kind == "constant":
                flat[:, start:stop] = value
            else:
                raise ValueError(f"{name}: unknown init {kind!r}")
        return flat

    def _param_specs(self):
        return [p for params in self.spec.values() for p in params.values()]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [N, M, in] @ weight [N, in, out] + bias [N, out] -> [N, M, out], one agent per row."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


def mlp(x: torch.Tensor, params: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The stacked tanh MLP `prefix` (w1, b1, w2, b2): [N, M, in] -> [N, M, out]."""
    hidden = torch.tanh(linear(x, params[f"{prefix}.w1"], params[f"{prefix}.b1"]))
    return linear(hidden, params[f"{prefix}.w2"], params[f"{prefix}.b2"])
