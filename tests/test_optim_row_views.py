"""agents.optim above KEPT_ROW_VIEWS rows: the fused step makes each block's row views when it runs instead of
keeping them (0.24 GB at 100,000 rows). It must step exactly as with kept views, which tests/test_optim.py
holds to N separate torch optimizers: the same parameters, moments and step counts to the bit, through
blocks of rows (`start`), inactive rows, resets and clipping."""
import pytest
import torch

import agents.optim
from agents.optim import BatchedAdam, clip_coefficients

ROWS, SHAPES = 40, [(3, 4), (5,)]


def train(kept: bool, monkeypatch) -> BatchedAdam:
    monkeypatch.setattr(agents.optim, "KEPT_ROW_VIEWS", ROWS if kept else 8)
    g = torch.Generator().manual_seed(7)
    params = [torch.randn((ROWS, *shape), generator=g) for shape in SHAPES]
    optimizer = BatchedAdam(params, lr=0.05, betas=(0.8, 0.95))
    assert optimizer._kept_rows == kept
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g) * (1 + step) for p in params]
        active = torch.rand(ROWS, generator=g) > 0.3
        if step == 3:
            optimizer.reset_rows(torch.arange(5, 15))
        norms = torch.stack([torch.cat([grad[i].flatten() for grad in grads]).norm() for i in range(ROWS)])
        for low, high in ((0, 17), (17, ROWS)):  # two blocks of rows, as a learner's blocked update
            optimizer.step([grad[low:high].clone() for grad in grads], active[low:high],
                           grad_scale=clip_coefficients(norms[low:high], 1.0), start=low)
    return optimizer


def test_row_views_made_per_block_step_exactly_as_kept_ones(monkeypatch):
    if not agents.optim._fused_adam_works():
        pytest.skip("this torch has no fused CPU Adam kernel (views are only for it)")
    kept, made = train(True, monkeypatch), train(False, monkeypatch)
    for mine, theirs in zip(made.params + made.exp_avg + made.exp_avg_sq + [made.steps],
                            kept.params + kept.exp_avg + kept.exp_avg_sq + [kept.steps]):
        assert torch.equal(mine, theirs)
    assert 0 < int(made.steps.min()) < int(made.steps.max()) <= 6  # some rows sat out, some were reset


def test_rows_shared_among_threads_step_as_on_one_thread(monkeypatch):
    """The fused step's rows split among the optimizer's kept pool of Python threads give the bits of one
    thread (active and inactive rows, three steps), and the pool is made once."""
    real_threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on two cores, whatever this machine has

    def trained(rows_per_worker):
        monkeypatch.setattr(agents.optim, "_ROWS_PER_WORKER", rows_per_worker)
        params = torch.randn(300, 37, generator=torch.Generator().manual_seed(1))
        optimizer = BatchedAdam([params], lr=0.01)
        draws = torch.Generator().manual_seed(2)
        for _ in range(3):
            optimizer.step([torch.randn(300, 37, generator=draws)], torch.rand(300, generator=draws) > 0.1)
        return params, optimizer

    try:
        one, _ = trained(10**9)
        two, optimizer = trained(64)
    finally:
        torch.set_num_threads(real_threads)  # single_threaded_kernels restored the pretended count
    assert optimizer._pool.thread_count(2) == 2 and optimizer._pool._executor is not None
    assert torch.equal(one, two)
    start = torch.randn(300, 37, generator=torch.Generator().manual_seed(1))
    assert not torch.isclose(one, start).all(dim=1).any()  # every row stepped (none is inactive three times)
