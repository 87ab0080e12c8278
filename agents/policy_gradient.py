"""The REINFORCE math of `agents.reinforce`, batched over agents: returns, baselines, advantages, the
loss and its gradient written by hand (docs/design.md section 5).

For agent i with valid window steps t (those after its last death in the window):
    G_it   = sum_{s >= t} gamma^(s - t) r_is                  discounted reward-to-go within the window
    b_i    = EMA_i / (1 - decay^k_i) after k_i >= 1 windows    bias-corrected EMA of mean window returns
             (a fresh agent's first window uses its own mean window return)
    A_it   = G_it - b_i
    loss_i = -sum_t (A_it log pi_i(a_it) + entropy_coef H_it) / (valid steps of i)

Why by hand: at the project's sizes a training step costs its number of tensor operations, and the
backward below is a few dozen operations where autograd's graph is several times that (measured in
issue 7: a training step about 2x faster than autograd at N = 50). tests/test_gradient.py checks it
against autograd of a plain torch.distributions implementation, deaths inside the window included.
"""
from __future__ import annotations

import math

import torch

from agents.networks import relu_scores_backward, softmax_backward
from homoecon_env.config import NUM_MOVES  # the move action of a spatial world (docs/design.md section 13)

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
LOG_STD_RANGE = (-10.0, 2.0)  # the log stds are clamped to this range (no gradient outside it)


def discount_matrix(steps: int, gamma: float) -> torch.Tensor:
    """[T, T] float64 matrix D with D[s, t] = gamma^(s - t) for s >= t, else 0: returns = rewards @ D."""
    powers = torch.arange(steps)[:, None] - torch.arange(steps)[None, :]
    return torch.where(powers >= 0, gamma ** powers.clamp(min=0).to(torch.float64), 0.0)


def advantages(reward: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, discount: torch.Tensor,
               baseline: torch.Tensor, baseline_updates: torch.Tensor, decay: float, horizon: bool = False):
    """Returns, baselines and advantages of a window. reward [N, T] float64, valid [N, T] bool (no death
    follows a valid step), counts [N] valid steps (>= 1), discount [T, T] (`discount_matrix`), the EMA
    baseline [N] and its number of terms [N]. Returns (returns [N, T], window mean return [N],
    baseline used [N], advantages [N, T] zero on invalid steps), all float64.

    ``horizon`` (LearnerConfig.horizon_baseline): the EMA tracks the mean reward per step instead, and
    step t's baseline is it times h_t = sum_{s=t}^{T-1} gamma^(s - t), the discounted steps left. The
    reward-to-go of step 0 sums T rewards and that of step T-1 one; one baseline for both makes
    A_t swing with t by about (h_0 - h_{T-1}) times the mean reward, noise that has nothing to do
    with the action (on the positive control several times the value of the best job). Either baseline
    is independent of the actions, so the gradient stays unbiased. Then the second value returned is
    the window's mean reward per step."""
    returns = reward @ discount  # [N, T] discounted reward-to-go within the window
    source = reward if horizon else returns
    window_mean = torch.where(valid, source, 0.0).sum(dim=1) / counts  # [N]
    corrected = baseline / (1.0 - decay ** baseline_updates.to(torch.float64)).clamp(min=1e-300)
    used = torch.where(baseline_updates > 0, corrected, window_mean)
    if horizon:
        steps_left = discount.sum(dim=0)  # [T] h_t
        return returns, window_mean, used, torch.where(valid, returns - used[:, None] * steps_left, 0.0)
    return returns, window_mean, used, torch.where(valid, returns - used[:, None], 0.0)


def reinforce_loss(out: torch.Tensor, raw_log_std: torch.Tensor, pre_image: torch.Tensor, job: torch.Tensor,
                   advantage: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, entropy_coef: float,
                   num_jobs: int, tokens=None, vocab_size: int = 0, move=None):
    """Each agent's REINFORCE loss and its gradient, from the heads' output `out` [N, M, J + G] (job
    logits, Gaussian means), the unclamped log stds [N, G], the stored pre-images [N, M, G] and jobs
    [N, M], the advantages [N, M], the valid steps [N, M] and their counts [N] (at least 1), with log pi
    the job log-probability plus one Gaussian log density of the pre-images over all G dimensions, and
    H the categorical entropy of the job plus the Gaussian entropy.
    Returns (loss [N], entropy H [N, M], d sum(loss) / d out [N, M, J + G], d sum(loss) / d raw_log_std [N, G]).

    Symbolic broadcast mode: ``tokens`` [N, M, L] (ints in [0, vocab_size)) and `out` is [N, M, J + L * V
    + G] (job logits, the L tokens' V logits each, Gaussian means); log pi and H then add each token's
    categorical log-probability and entropy (the tokens are independent given the state), and the
    gradient has the job's form per token.

    Spatial worlds: ``move`` [N, M] (ints in [0, NUM_MOVES)) and `out` has the move's NUM_MOVES logits right
    after the job's ([N, M, J + 5 (+ L * V) + G]); log pi and H add the move's categorical log-probability
    and entropy, and its gradient has the job's form. Without ``move`` nothing of this runs.
    """
    g = raw_log_std.shape[-1]
    move_width = 0 if move is None else NUM_MOVES
    token_start = num_jobs + move_width
    categorical_width = token_start + (0 if tokens is None else tokens.shape[-1] * vocab_size)  # C
    log_std = raw_log_std.clamp(*LOG_STD_RANGE)  # [N, G]
    std = log_std.exp().unsqueeze(1)  # [N, 1, G]
    z = (pre_image - out[..., categorical_width:]) / std  # [N, M, G]
    log_p = torch.log_softmax(out[..., :num_jobs], dim=-1)  # [N, M, J]
    p = log_p.exp()
    categorical = (p * log_p).sum(-1).neg_()  # [N, M] entropy of the job
    log_std_sum = log_std.sum(-1, keepdim=True)  # [N, 1]
    log_prob = log_p.gather(-1, job.unsqueeze(-1)).squeeze(-1) - 0.5 * z.square().sum(-1) \
        - (log_std_sum + g * _LOG_SQRT_2PI)
    entropy = categorical + (log_std_sum + g * (0.5 + _LOG_SQRT_2PI))
    if move is not None:
        move_log_p = torch.log_softmax(out[..., num_jobs:token_start], dim=-1)  # [N, M, 5]
        move_p = move_log_p.exp()
        move_entropy = (move_p * move_log_p).sum(-1).neg_()  # [N, M]
        log_prob = log_prob + move_log_p.gather(-1, move.unsqueeze(-1)).squeeze(-1)
        entropy = entropy + move_entropy
    if tokens is not None:
        token_log_p, token_p, token_entropy = token_distributions(out[..., token_start:categorical_width], vocab_size)
        log_prob = log_prob + token_log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
        entropy = entropy + token_entropy.sum(-1)
    objective = torch.where(valid, torch.add(advantage * log_prob, entropy, alpha=entropy_coef), 0.0)
    weight = counts.to(out.dtype).reciprocal_().neg_()  # [N] d loss_i / d objective_it on valid steps
    loss = objective.sum(dim=1) * weight

    step = torch.where(valid, weight.unsqueeze(1), 0.0)  # [N, M] d total / d objective
    a = (step * advantage).unsqueeze(-1)  # d / d log_prob
    e = (step * entropy_coef).unsqueeze(-1)  # d / d entropy
    grad_mean = a * z / std  # d log N(u; mean, std) / d mean = z / std
    # d / d log_std: (z^2 - 1) from the log density, 1 from the entropy; zero where the clamp is active
    grad_log_std = (a * (z.square() - 1.0)).sum(1) + e.sum(1)
    grad_log_std.masked_fill_((raw_log_std < LOG_STD_RANGE[0]) | (raw_log_std > LOG_STD_RANGE[1]), 0.0)
    # d log p_job / d logit_j = 1[j = job] - p_j;  d H / d logit_j = -p_j (log p_j + H)
    grad_logits = (a + e * (log_p + categorical.unsqueeze(-1))).mul_(p).neg_()
    grad_logits.scatter_add_(-1, job.unsqueeze(-1), a)
    if move is not None:  # the job's form
        grad_move = (a + e * (move_log_p + move_entropy.unsqueeze(-1))).mul_(move_p).neg_()
        grad_move.scatter_add_(-1, move.unsqueeze(-1), a)
        grad_logits = torch.cat([grad_logits, grad_move], dim=-1)
    if tokens is not None:  # the same per token: [N, M, L, V]
        a4, e4 = a.unsqueeze(-1), e.unsqueeze(-1)  # [N, M, 1, 1]
        grad_tokens = (a4 + e4 * (token_log_p + token_entropy.unsqueeze(-1))).mul_(token_p).neg_()
        grad_tokens.scatter_add_(-1, tokens.unsqueeze(-1), a4.expand(*tokens.shape, 1))
        grad_logits = torch.cat([grad_logits, grad_tokens.flatten(-2)], dim=-1)
    return loss, entropy, torch.cat([grad_logits, grad_mean], dim=-1), grad_log_std


def token_distributions(logits: torch.Tensor, vocab_size: int):
    """(log p [..., L, V], p, entropy [..., L]) of the token categoricals from their logits [..., L * V]."""
    log_p = torch.log_softmax(logits.unflatten(-1, (-1, vocab_size)), dim=-1)
    p = log_p.exp()
    return log_p, p, (p * log_p).sum(-1).neg_()


def policy_gradient(window: dict, blocks: dict, heads, advantage: torch.Tensor, valid: torch.Tensor,
                    counts: torch.Tensor, entropy_coef: float, num_jobs: int, self_dim: int, out: torch.Tensor,
                    vocab_size: int = 0):
    """The gradient of the summed losses over a window, written into out [N, D] in the storage order of
    the parameter blocks (social filter first when there is one). `window` holds the stored inputs and
    activations ([N, M, ...]: own, peers, pre_image, job, x, hidden, out, attention, relu) of
    `ReinforceLearner._act_forward`, `blocks` the shaped parameter views, `heads` the `ParallelMLPs`.
    The backward of the forward pass, operation by operation. Returns (loss [N], entropy [N, M], out).
    Symbolic mode: `window` holds the tokens [N, M, L] too, and ``vocab_size`` is V. Spatial worlds: it
    holds the moves [N, M] too (the move head's logits follow the job's)."""
    n = out.shape[0]
    loss, entropy, grad_out, grad_log_std = reinforce_loss(
        window["out"], blocks["log_std"], window["pre_image"], window["job"], advantage, valid, counts,
        entropy_coef, num_jobs, window.get("tokens"), vocab_size, window.get("move"))
    grad_w1, grad_b1, grad_w2, grad_b2, grad_x = heads.backward(grad_out, window["x"], window["hidden"],
                                                                blocks["w1"], blocks["w2"])
    grads = [grad_w1, grad_b1, grad_w2, grad_b2, grad_log_std]
    if "w_own" in blocks:  # the learned social filter: context = attention-weighted mean of the peers
        peers = window["peers"]
        _, m, k, p = peers.shape
        grad_context = grad_x[..., self_dim:self_dim + p].reshape(n * m, 1, p)  # (a plain mean after it: no parameters)
        grad_attention = torch.bmm(grad_context, peers.reshape(n * m, k, p).transpose(1, 2)).view(n, m, k)
        # masked peers have attention 0, hence gradient 0
        grad_scores = softmax_backward(grad_attention, window["attention"])
        grad_own_part, grad_w_peer, grad_score = relu_scores_backward(grad_scores, peers, window["relu"],
                                                                      blocks["score"], window.get("relu_grad"))
        grad_w_own = torch.bmm(window["own"].transpose(1, 2), grad_own_part)
        grads = [grad_w_own, grad_w_peer, grad_own_part.sum(1, keepdim=True), grad_score] + grads
    torch.cat([grad.reshape(n, -1) for grad in grads], dim=1, out=out)
    return loss, entropy, out

