"""One optimizer for N independent agents: Adam with per-agent state, and per-agent gradient clipping.

Every tensor handled here is stacked over agents (leading axis N). Row i of the result equals what
a separate `torch.optim.Adam` over agent i's parameters alone would do, including its bias
correction: each row keeps its own step count, so a newborn (reset row) starts Adam afresh while
its neighbours continue. Rows that had no data in an update are skipped entirely (no moment decay,
no step), as a separate optimizer that is not called would be.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Optional

import torch
from torch.optim.adam import adam as functional_adam  # public (in torch.optim.adam.__all__)

from homoecon_env.core.threads import BlockPool

_ROWS_PER_WORKER = 2048  # fewer active rows than this per thread: one thread does the fused step
# The fused step takes one tensor per row. Up to this many rows their views are made once and kept; above it
# they are made for each block a step covers (a view costs about 0.6 KB: 0.24 GB for the four lists at 100,000
# rows, against a few milliseconds per 8,192 rows to make them)
KEPT_ROW_VIEWS = 16384


@contextlib.contextmanager
def single_threaded_kernels() -> Iterator[None]:
    """torch's intra-op pool set to one thread for the block (then restored): kernels run inline."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def clip_coefficients(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """[N] factor that scales each row's gradient to norm <= max_norm, like torch.nn.utils.clip_grad_norm_
    applied to that agent alone: max_norm / (norm + 1e-6), capped at 1."""
    return (max_norm / (norms + 1e-6)).clamp_(max=1.0)


class BatchedAdam:
    """Adam (no weight decay, no amsgrad) over stacked parameters with per-row state.

    params: tensors [N, ...] updated in place. `step(grads, active)` applies one Adam step to the
    rows where active [N] is True; `reset_rows(rows)` gives rows fresh state (step 0, zero moments).
    The state lives on the parameters' device, in their dtype (the step counts in float32). On the CPU a
    step is torch's fused CPU kernel per row; elsewhere (CUDA) it is the in-place passes over the stacked
    [N, ...] tensors (a handful of kernels, whatever N, where per-row lists would launch thousands).
    `fused` forces one or the other (True needs the CPU kernel).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: Optional[bool] = None):
        if not params:
            raise ValueError("BatchedAdam needs at least one parameter tensor")
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(betas[0]), float(betas[1]), float(eps)
        num_rows = params[0].shape[0]
        # [N] Adam steps taken by each row, counted in a float tensor because the fused kernel reads each
        # row's count as one (exact up to 2^24 steps); changed in place, so the rows' views stay valid
        device = params[0].device
        self.steps = torch.zeros(num_rows, dtype=torch.float32, device=device)
        # fused: torch's fused CPU kernel per row (None: on the CPU where this torch has it); else the passes
        self._fused = device.type == "cpu" and _fused_adam_works() if fused is None else bool(fused)
        # Both moments of a parameter in one [2, N, ...] tensor, so resetting a row is one operation.
        self._moments = [torch.zeros(2, *p.shape, dtype=p.dtype, device=p.device) for p in params]
        self.exp_avg = [m[0] for m in self._moments]
        self.exp_avg_sq = [m[1] for m in self._moments]
        self._scratch: list[Optional[torch.Tensor]] = [None] * len(params)  # denominator of the passes, kept
        self._betas = torch.tensor([[self.beta1], [self.beta2]], dtype=torch.float64, device=device)  # [2, 1]
        self._inactive_factors = torch.tensor([0.0, 1.0, self.eps, 0.0], dtype=torch.float64, device=device)
        # each agent's row of each tensor as its own tensor, for the fused kernel (views, made once up to
        # KEPT_ROW_VIEWS rows)
        self._kept_rows = self._fused and num_rows <= KEPT_ROW_VIEWS  # else made per block (`_views`)
        rows = (lambda tensor: list(tensor.unbind(0))) if self._kept_rows else (lambda tensor: [])
        self._step_rows = rows(self.steps)
        self._pool = BlockPool(min_blocks_per_thread=1)  # the Python threads of `_fused_step`
        self._param_rows = [rows(p) for p in params]
        self._avg_rows = [rows(m) for m in self.exp_avg]
        self._avg_sq_rows = [rows(m) for m in self.exp_avg_sq]
        self._grad_rows: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (gradient tensor, its rows), last used

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor, grad_scale: Optional[torch.Tensor] = None,
             start: int = 0) -> None:
        """One Adam step on the rows where active [N] is True; other rows are left untouched. With `start`,
        `grads`, `active` and `grad_scale` cover only the rows [start, start + len(active)) (a learner
        that updates its agents a block of rows at a time); the other rows are left untouched.

        The gradient of an inactive row is ignored. `grad_scale` [N], if given, multiplies each row's
        gradient first (e.g. the clipping coefficients of `clip_coefficients`); `grads` may be
        overwritten. With torch's fused CPU Adam (the public `torch.optim.adam.adam(..., fused=True)`,
        torch >= 2.4) each active row is one tensor of its lists, with its own step count (which it
        increments): one pass over parameters, gradients and moments. Otherwise the step is a few
        in-place passes with per-row factors.
        """
        if grad_scale is not None:
            for grad in grads:
                grad.mul_(grad_scale.view((-1,) + (1,) * (grad.dim() - 1)))
        rows = slice(start, start + active.shape[0])
        if self._fused:
            self._fused_step(grads, active, rows)  # counts each active row's step itself
        else:
            self.steps[rows].add_(active)  # [N]
            self._step_in_passes(grads, active, self.steps[rows], rows)

    def _rows_of(self, grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Each gradient tensor's rows as tensors; kept while the same gradient tensors come back."""
        stale = len(grads) != len(self._grad_rows) or any(
            grad is not mine for grad, (mine, _) in zip(grads, self._grad_rows))
        if stale:
            self._grad_rows = [(grad, list(grad.unbind(0))) for grad in grads]
        return [rows for _, rows in self._grad_rows]

    def _views(self, kept: list, tensor: torch.Tensor, block: slice) -> list:
        """The rows `block` of `tensor` as tensors: from the kept views, or made now (KEPT_ROW_VIEWS)."""
        return kept[block] if self._kept_rows else list(tensor[block].unbind(0))

    def _fused_step(self, grads: list[torch.Tensor], active: torch.Tensor, block: slice) -> None:
        rows = None if bool(active.all()) else active.nonzero().view(-1).tolist()
        pick = (lambda tensors: tensors) if rows is None else (lambda tensors: [tensors[i] for i in rows])
        counts = pick(self._views(self._step_rows, self.steps, block))
        if not counts:
            return
        calls = []
        for index, (param_rows, grad_rows, avg_rows, avg_sq_rows) in enumerate(zip(
                self._param_rows, self._rows_of(grads), self._avg_rows, self._avg_sq_rows)):
            param_rows, avg_rows, avg_sq_rows = (self._views(kept, tensor, block) for kept, tensor in (
                (param_rows, self.params[index]), (avg_rows, self.exp_avg[index]),
                (avg_sq_rows, self.exp_avg_sq[index])))
            # adam increments the counts it is given: the rows' own for the first tensor, throwaway copies
            # (taken now, before any increment) for the others
            steps = counts if index == 0 else [count.clone() for count in counts]
            calls.append((pick(param_rows), pick(grad_rows), pick(avg_rows), pick(avg_sq_rows), steps))
        # The kernel hands every tensor to torch's intra-op thread pool, and one agent's row is too small to
        # pay for that (at 20,000 agents a step took 10x longer on two busy cores). So each share of the rows
        # runs single-threaded on its own Python thread (torch releases the GIL inside the kernel): the
        # arithmetic per entry is the same, so the result is too, bit for bit.
        workers = min(torch.get_num_threads(), max(1, len(counts) // _ROWS_PER_WORKER))
        shares = [[tuple(tensors[w::workers] for tensors in call) for call in calls] for w in range(workers)]

        def run(run_shares: list) -> None:  # one share per thread (the pool's blocks are the shares)
            for share in run_shares:
                for params, grads_, avgs, avg_sqs, steps in share:
                    functional_adam(params, grads_, avgs, avg_sqs, [], steps, fused=True, amsgrad=False,
                                    beta1=self.beta1, beta2=self.beta2, lr=self.lr, weight_decay=0.0, eps=self.eps,
                                    maximize=False)

        with single_threaded_kernels():
            self._pool.run(run, shares, threads=workers)  # (a kept pool: its threads are made once)

    def _step_in_passes(self, grads: list[torch.Tensor], active: torch.Tensor, steps: torch.Tensor,
                        block: slice) -> None:
        bias = 1.0 - self._betas.pow(steps.to(torch.float64))  # [2, N], in double like torch.optim.Adam's floats
        bias2_sqrt = bias[1].sqrt()
        # p -= step * m / (sqrt(v) / b2 + eps) is computed as p -= (step * b2) * m / (sqrt(v) + eps * b2),
        # one pass fewer.
        # Per row: weight of the gradient in m, decay of v, eps * b2, -step * b2 (inactive rows: 0, 1, eps, 0).
        ones = torch.ones_like(bias2_sqrt)
        factors = torch.stack([ones * (1.0 - self.beta1), ones * self.beta2, self.eps * bias2_sqrt,
                               (-self.lr) * bias2_sqrt / bias[0].clamp(min=1e-300)], dim=1)
        factors = torch.where(active[:, None], factors, self._inactive_factors)  # [N, 4]
        for param, grad, exp_avg, exp_avg_sq, index in zip(self.params, grads, self.exp_avg, self.exp_avg_sq,
                                                            range(len(self.params))):
            param, exp_avg, exp_avg_sq = param[block], exp_avg[block], exp_avg_sq[block]
            shape = (param.shape[0],) + (1,) * (param.dim() - 1)
            weight1, decay2, eps, step = (f.view(shape) for f in factors.to(param.dtype).unbind(1))
            grad.masked_fill_(~active.view(shape), 0.0)
            exp_avg.lerp_(grad, weight1)
            exp_avg_sq.mul_(decay2).addcmul_(grad, grad, value=1.0 - self.beta2)
            denom = self._scratch[index]
            if denom is None or denom.shape != param.shape:
                denom = self._scratch[index] = torch.empty_like(param)
            torch.sqrt(exp_avg_sq, out=denom).add_(eps)
            param.addcdiv_(torch.mul(exp_avg, step, out=grad), denom)

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Fresh optimizer state (step 0, zero moments) for rows: an [N] bool mask or a 1-D index of rows."""
        index = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
        self.steps.index_fill_(0, index, 0)
        for moments in self._moments:
            moments.index_fill_(1, index, 0.0)

    @torch.no_grad()
    def inherit_rows(self, rows: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                     fresh: Optional[torch.Tensor] = None) -> None:
        """Rows [C] take their parents' state: both moments the mean of rows ``first`` [C] and ``second``
        [C], the step count the larger parent's. ``fresh`` [C] bool marks rows that get fresh state
        instead (founders). Reads every parent before writing any row."""
        inherited = [m.index_select(1, first).add_(m.index_select(1, second)).mul_(0.5) for m in self._moments]
        steps = torch.maximum(self.steps.index_select(0, first), self.steps.index_select(0, second))
        for moments, values in zip(self._moments, inherited):
            moments.index_copy_(1, rows, values)
        self.steps.index_copy_(0, rows, steps)
        if fresh is not None and bool(fresh.any()):
            self.reset_rows(rows[fresh])

    def state_dict(self) -> dict:
        """Steps [N] (int64) and both moments, as plain data. The moments are the live tensors, not
        copies (views of one [2, N, ...] storage each, which a checkpoint writes once): save them right
        away, or copy them to keep them across a step."""
        cpu = torch.device("cpu")  # a checkpoint holds CPU tensors (on the CPU: the live ones)
        return {"steps": self.steps.to(cpu, torch.int64), "exp_avg": [m.to(cpu) for m in self.exp_avg],
                "exp_avg_sq": [m.to(cpu) for m in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"optimizer state has {len(state['exp_avg'])} tensors, expected {len(self.params)}")
        pairs = list(zip(self.exp_avg + self.exp_avg_sq + [self.steps],
                         list(state["exp_avg"]) + list(state["exp_avg_sq"]) + [state["steps"]]))
        for mine, theirs in pairs:  # check everything before changing anything
            if not isinstance(theirs, torch.Tensor) or mine.shape != theirs.shape:
                got = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
                raise ValueError(f"optimizer state shape {got} != expected {tuple(mine.shape)}")
        for mine, theirs in pairs:
            mine.copy_(theirs)


@functools.cache
def _fused_adam_works() -> bool:
    """Whether torch's fused CPU Adam works here (torch >= 2.4); checked once on a tiny problem."""
    try:
        param, grad, avg, avg_sq = torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2)
        functional_adam([param], [grad], [avg], [avg_sq], [], [torch.zeros(())], fused=True, amsgrad=False,
                        beta1=0.9, beta2=0.999, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
        return bool(torch.allclose(param, torch.full((2,), 0.9)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
