"""One optimizer for N independent agents: Adam with per-agent state, and per-agent gradient clipping.

Every tensor handled here is stacked over agents (leading axis N). Row i of the result equals what
a separate `torch.optim.Adam` over agent i's parameters alone would do, including its bias
correction: each row keeps its own step count, so a newborn (reset row) starts Adam afresh while
its neighbours continue. Rows that had no data in an update are skipped entirely (no moment decay,
no step), as a separate optimizer that is not called would be.
"""
from __future__ import annotations

import torch


def row_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[N] Euclidean norm of each row over all tensors (one agent's whole gradient)."""
    if len(tensors) == 1:
        return torch.linalg.vector_norm(tensors[0].reshape(tensors[0].shape[0], -1), dim=1)
    squares = [torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1).square() for t in tensors]
    return torch.stack(squares, dim=0).sum(dim=0).sqrt()


def clip_grad_norm_per_row_(grads: list[torch.Tensor], max_norm: float, norms=None) -> torch.Tensor:
    """Scale each agent's gradient to norm <= max_norm, in place, like torch.nn.utils.clip_grad_norm_
    applied to that agent alone (coefficient max_norm / (norm + 1e-6), capped at 1).
    `norms` [N] may pass `row_norms(grads)` when already computed. Returns the [N] norms before clipping."""
    norms = row_norms(grads) if norms is None else norms
    coefficient = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # [N]
    for g in grads:
        g.mul_(coefficient.view(-1, *([1] * (g.dim() - 1))))
    return norms


class BatchedAdam:
    """Adam (no weight decay, no amsgrad) over stacked parameters with per-row state.

    params: tensors [N, ...] updated in place. `step(grads, active)` applies one Adam step to the
    rows where active [N] is True; `reset_rows(rows)` gives rows fresh state (step 0, zero moments).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        if not params:
            raise ValueError("BatchedAdam needs at least one parameter tensor")
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(betas[0]), float(betas[1]), float(eps)
        num_rows = params[0].shape[0]
        self.steps = torch.zeros(num_rows, dtype=torch.int64)  # [N] Adam steps taken by each row
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        """One Adam step on the rows where active [N] is True; other rows are left untouched.

        The gradient of an inactive row is ignored (zeroed in place in `grads`). Written as a few in-place passes with per-row
        factors (an inactive row gets decay 1, update 0) because at N = 10,000 agents each pass over
        the parameters is hundreds of megabytes.
        """
        steps = self.steps + active.long()  # [N]
        all_active = bool(active.all())
        exponent = steps.to(torch.float64)
        bias1 = 1.0 - self.beta1 ** exponent  # [N], computed in double like torch.optim.Adam's Python floats
        bias2_sqrt = (1.0 - self.beta2 ** exponent).sqrt()
        step_size = torch.where(active, self.lr / bias1.clamp(min=1e-300), 0.0)
        bias2_sqrt = torch.where(active, bias2_sqrt, 1.0)
        decay1 = torch.where(active, 1.0 - self.beta1, 0.0)  # lerp weight: 0 leaves an inactive row's moment as is
        decay2 = torch.where(active, self.beta2, 1.0)
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (param.dim() - 1)
            row = lambda values: values.to(param.dtype).view(shape)
            if not all_active:
                grad.masked_fill_(~active.view(shape), 0.0)
            exp_avg.lerp_(grad, row(decay1))
            exp_avg_sq.mul_(row(decay2)).addcmul_(grad, grad, value=1.0 - self.beta2)
            denom = exp_avg_sq.sqrt().div_(row(bias2_sqrt)).add_(self.eps)
            param.addcdiv_(exp_avg.mul(row(-step_size)), denom)
        self.steps = steps

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Fresh optimizer state (step 0, zero moments) for rows [N] bool, e.g. newborn agents."""
        self.steps = self.steps.masked_fill(rows, 0)
        index = rows.nonzero().squeeze(1)
        for exp_avg, exp_avg_sq in zip(self.exp_avg, self.exp_avg_sq):
            exp_avg.index_fill_(0, index, 0.0)
            exp_avg_sq.index_fill_(0, index, 0.0)

    def state_dict(self) -> dict:
        return {"steps": self.steps.clone(), "exp_avg": [t.clone() for t in self.exp_avg],
                "exp_avg_sq": [t.clone() for t in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"optimizer state has {len(state['exp_avg'])} tensors, expected {len(self.params)}")
        for mine, theirs in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            if mine.shape != theirs.shape:
                raise ValueError(f"optimizer state shape {tuple(theirs.shape)} != parameter shape {tuple(mine.shape)}")
            mine.copy_(theirs)
        self.steps = state["steps"].clone()
