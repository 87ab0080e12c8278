"""agents.optim: batched per-agent Adam and clipping equal N separate torch optimizers."""
import pytest
import torch

import agents.optim
from agents.optim import BatchedAdam, clip_coefficients, clip_grad_norm_per_row_, row_norms

SHAPES = [(3, 4), (4,), (2, 3, 2)]  # per-agent parameter shapes


def stacked_params(num_agents, generator):
    return [torch.randn((num_agents, *s), generator=generator) for s in SHAPES]


def test_row_norms_are_each_agents_whole_gradient_norm():
    g = torch.Generator().manual_seed(0)
    grads = stacked_params(5, g)
    expected = torch.stack([torch.cat([t[i].flatten() for t in grads]).norm() for i in range(5)])
    torch.testing.assert_close(row_norms(grads), expected)


@pytest.fixture(params=["fused", "passes"])
def adam_path(request, monkeypatch):
    """Run a test with torch's fused Adam kernel and again with the in-pass fallback (torch < 2.4)."""
    if request.param == "fused" and not agents.optim._fused_adam_works():
        pytest.skip("this torch has no fused CPU Adam kernel")
    monkeypatch.setattr(agents.optim, "_FUSED_ADAM", request.param == "fused")
    return request.param


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_batched_adam_with_clipping_equals_separate_adams(max_norm, adam_path):
    num_agents, lr = 4, 0.05
    g = torch.Generator().manual_seed(1)
    stacked = stacked_params(num_agents, g)
    separate = [[p[i].clone().requires_grad_(True) for p in stacked] for i in range(num_agents)]
    separate_opts = [torch.optim.Adam(ps, lr=lr, betas=(0.8, 0.95), eps=1e-8) for ps in separate]
    batched = BatchedAdam(stacked, lr=lr, betas=(0.8, 0.95), eps=1e-8)
    for step in range(8):
        grads = [torch.randn(p.shape, generator=g) * (1 + 3 * step) for p in stacked]
        active = torch.tensor([True, step % 3 != 1, True, step != 0])  # some agents sit out some updates
        reset = torch.tensor([False, False, step == 4, False])  # agent 2 is reborn midway
        if bool(reset.any()):
            batched.reset_rows(reset)
            fresh = [p[2].clone().requires_grad_(True) for p in stacked]
            separate[2], separate_opts[2] = fresh, torch.optim.Adam(fresh, lr=lr, betas=(0.8, 0.95), eps=1e-8)
        for i in range(num_agents):
            if not bool(active[i]):
                continue
            for p, grad in zip(separate[i], grads):
                p.grad = grad[i].clone()
            torch.nn.utils.clip_grad_norm_(separate[i], max_norm)
            separate_opts[i].step()
        grads = [torch.where(active.view(-1, *[1] * (t.dim() - 1)), t, 0.0) for t in grads]
        clip_grad_norm_per_row_(grads, max_norm)
        batched.step(grads, active)
        for i in range(num_agents):
            for p_batched, p_separate in zip(stacked, separate[i]):
                torch.testing.assert_close(p_batched[i], p_separate.detach(), rtol=1e-6, atol=1e-7)
    assert batched.steps.tolist() == [8, 5, 4, 7]


def test_reset_rows_gives_fresh_state_and_leaves_others():
    g = torch.Generator().manual_seed(2)
    params = stacked_params(3, g)
    opt = BatchedAdam(params, lr=0.1)
    opt.step([torch.randn(p.shape, generator=g) for p in params], torch.ones(3, dtype=torch.bool))
    kept = [t[0].clone() for t in opt.exp_avg]
    opt.reset_rows(torch.tensor([False, True, False]))
    assert opt.steps.tolist() == [1, 0, 1]
    assert all(bool((t[1] == 0).all()) for t in opt.exp_avg + opt.exp_avg_sq)
    assert all(torch.equal(a[0], b) for a, b in zip(opt.exp_avg, kept))


def test_optimizer_state_dict_round_trip():
    g = torch.Generator().manual_seed(3)
    params = stacked_params(2, g)
    opt = BatchedAdam(params, lr=0.1)
    opt.step([torch.randn(p.shape, generator=g) for p in params], torch.tensor([True, False]))
    other = BatchedAdam([p.clone() for p in params], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert torch.equal(other.steps, opt.steps)
    assert all(torch.equal(a, b) for a, b in zip(other.exp_avg_sq, opt.exp_avg_sq))


def test_grad_scale_clips_like_clip_grad_norm_and_ignores_inactive_rows(adam_path):
    g = torch.Generator().manual_seed(4)
    params = stacked_params(4, g)
    clipped, scaled = BatchedAdam([p.clone() for p in params], lr=0.1), BatchedAdam([p.clone() for p in params], lr=0.1)
    active = torch.tensor([True, False, True, True])
    grads = [torch.randn(p.shape, generator=g) * 3 for p in params]
    grads[0][1] = float("nan")  # an inactive row's gradient is ignored, whatever it holds
    norms = row_norms(grads)
    mine = [t.clone() for t in grads]
    clip_grad_norm_per_row_(mine, 1.0)
    clipped.step(mine, active)
    scaled.step([t.clone() for t in grads], active, grad_scale=clip_coefficients(norms, 1.0))
    for a, b, original in zip(clipped.params, scaled.params, params):
        torch.testing.assert_close(a, b)
        assert torch.equal(b[1], original[1])
    assert scaled.steps.tolist() == [1, 0, 1, 1]
