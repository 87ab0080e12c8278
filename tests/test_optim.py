"""agents.optim: batched per-agent Adam and clipping equal N separate torch optimizers."""
import pytest
import torch

import agents.optim
from agents.optim import BatchedAdam, clip_coefficients

SHAPES = [(3, 4), (4,), (2, 3, 2)]  # per-agent parameter shapes


def stacked_params(num_agents, generator):
    return [torch.randn((num_agents, *s), generator=generator) for s in SHAPES]


def row_norms(tensors):
    """[N] norm of each agent's whole gradient, one agent at a time."""
    return torch.stack([torch.cat([t[i].flatten() for t in tensors]).norm() for i in range(tensors[0].shape[0])])


@pytest.fixture(params=["fused", "passes"])
def adam_path(request, monkeypatch):
    """Run a test with torch's fused Adam kernel and again with the in-pass fallback (torch < 2.4)."""
    if request.param == "fused" and not agents.optim._fused_adam_works():
        pytest.skip("this torch has no fused CPU Adam kernel")
    use_fused = request.param == "fused"
    monkeypatch.setattr(agents.optim, "_fused_adam_works", lambda: use_fused)
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
        batched.step(grads, active, grad_scale=clip_coefficients(row_norms(grads), max_norm))
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


def test_inactive_rows_are_left_alone_whatever_their_gradient(adam_path):
    g = torch.Generator().manual_seed(4)
    params = stacked_params(4, g)
    adam = BatchedAdam([p.clone() for p in params], lr=0.1)
    active = torch.tensor([True, False, True, True])
    grads = [torch.randn(p.shape, generator=g) * 3 for p in params]
    grads[0][1] = float("nan")  # an inactive row's gradient is ignored, whatever it holds
    adam.step(grads, active, grad_scale=clip_coefficients(row_norms(grads), 1.0))
    for mine, original in zip(adam.params, params):
        assert torch.equal(mine[1], original[1]) and not torch.equal(mine[0], original[0])
    assert all(bool((m[1] == 0).all()) for m in adam.exp_avg + adam.exp_avg_sq)
    assert adam.steps.tolist() == [1, 0, 1, 1]


def test_a_new_gradient_tensor_is_used_not_the_last_ones_rows(adam_path):
    """The optimizer keeps the rows of the gradient it was last given; a different tensor must be read afresh."""
    params = [torch.zeros(2, 3)]
    adam = BatchedAdam([params[0].clone()], lr=0.1)
    reference = torch.optim.Adam([torch.zeros(3, requires_grad=True)], lr=0.1)
    for sign in (1.0, -1.0, -1.0):
        grad = torch.full((2, 3), sign)  # a fresh tensor each time
        adam.step([grad], torch.tensor([True, True]))
        reference.param_groups[0]["params"][0].grad = torch.full((3,), sign)
        reference.step()
    torch.testing.assert_close(adam.params[0][1], reference.param_groups[0]["params"][0].detach())


def test_loading_a_misshapen_or_non_tensor_state_is_refused_naming_what_came_and_changes_nothing():
    g = torch.Generator().manual_seed(5)
    params = stacked_params(2, g)
    opt = BatchedAdam(params, lr=0.1)
    opt.step([torch.randn(p.shape, generator=g) for p in params], torch.tensor([True, True]))
    before = opt.state_dict()
    wide = dict(before, exp_avg=[torch.zeros(2, 3, 5)] + before["exp_avg"][1:])  # SHAPES[0] is (3, 4)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 5\) != expected \(2, 3, 4\)"):
        opt.load_state_dict(wide)
    with pytest.raises(ValueError, match=r"shape list != expected"):
        opt.load_state_dict(dict(before, exp_avg_sq=[[0.0]] + before["exp_avg_sq"][1:]))
    assert all(torch.equal(a, b) for a, b in zip(opt.exp_avg, before["exp_avg"]))


def test_rows_shared_among_threads_step_like_one_adam_over_the_whole_tensor(adam_path):
    """Enough rows that the fused path splits them among threads: with every row active and the same step
    count, each row must move exactly as one torch.optim.Adam over the whole tensor moves it."""
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(3)
    stacked = torch.randn(5000, 6, generator=g)
    reference = stacked.clone().requires_grad_(True)
    adam = torch.optim.Adam([reference], lr=0.05)
    batched = BatchedAdam([stacked], lr=0.05)
    for _ in range(3):
        grad = torch.randn(5000, 6, generator=g)
        reference.grad = grad.clone()
        adam.step()
        batched.step([grad], torch.ones(5000, dtype=torch.bool))
    torch.testing.assert_close(stacked, reference.detach(), rtol=1e-6, atol=1e-7)
    assert batched.steps.tolist() == [3.0] * 5000
