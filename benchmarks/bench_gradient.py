"""Does the hand-written REINFORCE gradient pay? It against autograd, per update and per step (issue 12).

    python benchmarks/bench_gradient.py                       # N = 50 and 1,000; table + JSON
    python benchmarks/bench_gradient.py --sizes 50 --seconds 2 --repeats 1

Data: a live economy and `ReinforceLearner` run two windows, then one more full window of
`update_every` steps is recorded and kept (not learned from); every variant differentiates that
same window (all agents, deaths inside it included), with the advantages `_learn` computes.
Update variants (interleaved window by window in each process, so noise hits all alike):
- hand:          `agents.reinforce.policy_gradient`, the very call `_learn` makes for the gradient.
                 It reads the activations `act` stored, so it is the backward pass alone.
- hand+forward:  the learner's own forward over the window (`_act_forward` per step, as a resume
                 recomputes it) then `policy_gradient`: the same work as the autograd variant.
- autograd:      the same loss written plainly with torch ops (`plain_policy`, `plain_loss`, after
                 tests/test_learners.py's reference) on a leaf with requires_grad, forward + backward().
Step variants (fresh processes, alternated): act + env step + update + births, as bench.py's train
workload; `autograd` replaces `agents.reinforce.policy_gradient` by `autograd_gradient` (recompute the
window's forward under autograd, backward), all else shared (advantages, clipping, Adam).
Before timing, each update worker checks that the hand and autograd gradients agree
(torch.allclose, --rtol, --atol) and records the result; a failed check exits non-zero.
Reported (table and JSON): ms per call (per update; per env step for the steps, with one update every
`update_every` steps), the median window over all repeats and the best (least disturbed) window.
N > 50 uses num_peers=32; N = 50 observes everyone else. One torch thread (as bench.py up to 1,000).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from homoecon_env.files import atomic_write_text

UPDATE_VARIANTS = ("hand", "hand+forward", "autograd")
STEP_VARIANTS = ("hand", "autograd")


def setup(n: int):
    """A warm economy and learner whose window holds one full, unlearned window. Returns them, the
    current observation and the inputs `_learn` hands to `policy_gradient` (window, advantage, valid, counts)."""
    from agents import LearnerConfig, make_learner
    from agents.networks import DTYPE
    from agents.policy_gradient import advantages
    from homoecon_env import EconomyConfig
    from homoecon_env.core import Economy
    economy = Economy(EconomyConfig(num_agents=n, num_peers=None if n <= 50 else 32, max_steps=10**9))
    learner = make_learner("reinforce", economy.config, LearnerConfig())
    observation = economy.reset(0)
    steps = learner.config.update_every
    for index in range(3 * steps):
        out = economy.step(learner.act(observation))
        if index < 3 * steps - 1:
            learner.update(out)
            learner.on_births(out.births)
        observation = out.observation
    learn, clear = learner._learn, learner._clear_window
    learner._learn, learner._clear_window = (lambda ids: {}), (lambda: None)  # keep the last window, unlearned
    learner.update(out)
    learner._learn, learner._clear_window = learn, clear
    t = learner._t
    start = learner.window.window_start  # the first lines of `_learn`
    valid = learner._step_index[:t] >= start[:, None]
    counts = (t - start).clamp(min=1)
    window = learner.window.first(t)
    *_, advantage = advantages(window["reward"], valid, counts, learner._discount[:t, :t], learner.baseline,
                               learner.baseline_updates, learner.config.baseline_decay)
    return economy, learner, out, (window, advantage.to(DTYPE), valid, counts)


def plain_policy(learner, params: dict, own, peers, blocked):
    """The policy written plainly, network by network: own [N, T, S], peers [N, T, K, P], blocked [N, T, K]
    -> job logits [N, T, J], Gaussian means [N, T, G] (the learner's G layout), clamped log stds [N, G]."""
    f = {name: params[f"social_filter_net.{name}"] for name in ("w_own", "w_peer", "bias", "score")}
    hidden = torch.relu(torch.einsum("nts,nsa->nta", own, f["w_own"])[:, :, None] + f["bias"][:, None, None]
                        + torch.einsum("ntkp,npa->ntka", peers, f["w_peer"]))
    scores = torch.einsum("ntka,na->ntk", hidden, f["score"]).masked_fill(blocked, -1e9)
    attention = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
    x = torch.cat([own, torch.einsum("ntk,ntkp->ntp", attention, peers)], dim=-1)

    def mlp(net):  # weights [out, in], as torch.nn.Linear
        h = torch.tanh(torch.einsum("nti,nhi->nth", x, params[f"{net}.w1"]) + params[f"{net}.b1"][:, None])
        return torch.einsum("nth,noh->nto", h, params[f"{net}.w2"]) + params[f"{net}.b2"][:, None]

    production, j = mlp("production_net"), learner.economy_config.num_jobs
    heads = {"broadcast": "broadcast_net", "effort": "production_net", "consume": "consumption_net",
             "trade_weights": "trading_net"}
    assert list(learner.head_slices) == list(heads)  # the G layout
    means = torch.cat([mlp("broadcast_net"), production[..., j:], mlp("consumption_net"), mlp("trading_net")], -1)
    log_std = torch.cat([params[f"{net}.log_std"] for net in heads.values()], dim=-1).clamp(-10.0, 2.0)
    return production[..., :j], means, log_std


def plain_loss(logits, means, log_std, job, pre_image, advantage, valid, counts, entropy_coef: float):
    """loss_i = -sum_t valid (A log pi + c H) / counts_i, log pi = log softmax at the job + Gaussian log
    density of the pre-images; H = categorical + Gaussian entropy. Returns (loss [N], entropy [N, T])."""
    log_p = torch.log_softmax(logits, dim=-1)
    categorical = -(log_p.exp() * log_p).sum(-1)
    z = (pre_image - means) / log_std.exp()[:, None]
    half_log_2pi, g = 0.9189385332046727, means.shape[-1]
    log_prob = (log_p.gather(-1, job[..., None]).squeeze(-1) - 0.5 * z.square().sum(-1)
                - log_std.sum(-1, keepdim=True) - g * half_log_2pi)
    entropy = categorical + log_std.sum(-1, keepdim=True) + g * (0.5 + half_log_2pi)
    objective = torch.where(valid, advantage * log_prob + entropy_coef * entropy, 0.0)
    return -objective.sum(1) / counts, entropy


def autograd_gradient(learner, window, advantage, valid, counts, out=None):
    """The gradient [N, D] of the summed losses by autograd: forward over the window + backward().
    Returns (loss [N], entropy [N, T], gradient), as `policy_gradient` does."""
    leaf = learner.flat_params.detach().requires_grad_(True)
    logits, means, log_std = plain_policy(learner, learner.layout.views(leaf), window["own"], window["peers"],
                                          window["peer_blocked"])
    loss, entropy = plain_loss(logits, means, log_std, window["job"], window["pre_image"], advantage, valid, counts,
                               learner.config.entropy_coef)
    loss.sum().backward()
    grad = leaf.grad if out is None else out.copy_(leaf.grad)
    return loss.detach(), entropy.detach(), grad


def hand_gradient(learner, window, advantage, valid, counts, forward: bool = False):
    """What `_learn` computes: `policy_gradient` from the activations `act` stored (with `forward`,
    recomputing them first with the learner's own forward pass)."""
    from agents.policy_gradient import policy_gradient
    if forward:
        for t in range(window["own"].shape[1]):
            learner._act_forward(t)
    return policy_gradient(window, learner._blocks_now, learner.heads, advantage, valid, counts,
                           learner.config.entropy_coef, learner.economy_config.num_jobs, learner.self_dim,
                           learner._grad)


def update_worker(n: int, seconds: float, windows: int, rtol: float, atol: float) -> dict:
    """Check that the gradients agree, then time the update variants, interleaved window by window."""
    _, learner, _, inputs = setup(n)
    hand = hand_gradient(learner, *inputs)[2].clone()
    auto = autograd_gradient(learner, *inputs)[2]
    check = {"agree": bool(torch.allclose(hand, auto, rtol=rtol, atol=atol)), "rtol": rtol, "atol": atol,
             "max_abs_diff": float((hand - auto).abs().max()), "max_abs_grad": float(hand.abs().max())}
    calls = {"hand": lambda: hand_gradient(learner, *inputs), "hand+forward": lambda: hand_gradient(learner, *inputs,
                                                                                                      forward=True),
             "autograd": lambda: autograd_gradient(learner, *inputs)}
    if not check["agree"]:
        return {"check": check, "window_ms": {}}
    return {"check": check, "window_ms": timed(calls, seconds, windows)}


def step_worker(n: int, variant: str, seconds: float, windows: int) -> dict:
    """ms per training step (act + env step + update + births) with the gradient of `variant`."""
    import agents.reinforce
    economy, learner, out, _ = setup(n)
    learner._learn(out.acting_ids)  # learn from the kept window, as `update` would have: the loop starts
    learner._clear_window()  # at a window's start
    learner.on_births(out.births)
    if variant == "autograd":
        agents.reinforce.policy_gradient = (
            lambda window, blocks, heads, advantage, valid, counts, *rest:
            autograd_gradient(learner, window, advantage, valid, counts, out=rest[-1]))
    state = {"observation": out.observation}

    def train_step():
        stepped = economy.step(learner.act(state["observation"]))
        learner.update(stepped)
        learner.on_births(stepped.births)
        state["observation"] = stepped.observation

    return {"window_ms": timed({variant: train_step}, seconds, windows, min_calls=learner.config.update_every)}


def timed(calls: dict, seconds: float, windows: int, min_calls: int = 3) -> dict:
    """ms per call of each callable, in `windows` rounds of about seconds / windows split among them
    (one warm-up call each first). Returns {name: [ms of each window]}."""
    for call in calls.values():
        call()
    result, budget = {name: [] for name in calls}, seconds / windows / len(calls)
    for _ in range(windows):
        for name, call in calls.items():
            count, start = 0, time.perf_counter()
            # whole multiples of min_calls: a step window then holds whole update windows
            while count < min_calls or count % min_calls or time.perf_counter() - start < budget:
                call()
                count += 1
            result[name].append(1e3 * (time.perf_counter() - start) / count)
    return result


def run_worker(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(windows: list[float]) -> dict:
    ordered = sorted(windows)
    return {"median_ms": ordered[len(ordered) // 2], "best_ms": ordered[0], "windows_ms": ordered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 1000], help="population sizes N")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per process")
    parser.add_argument("--windows", type=int, default=5, help="timing windows per process")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (windows pooled)")
    parser.add_argument("--no-step", action="store_true", help="time the update only, not the training step")
    parser.add_argument("--rtol", type=float, default=1e-4, help="gradient check: relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-5, help="gradient check: absolute tolerance")
    parser.add_argument("--out", default="benchmarks/results/gradient.json", help="JSON output path")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(1)
        kind, n = args.worker[0], int(args.worker[1])
        if kind == "update":
            result = update_worker(n, args.seconds, args.windows, args.rtol, args.atol)
        else:
            result = step_worker(n, kind.removeprefix("step-"), args.seconds, args.windows)
        print(json.dumps(result))
        sys.exit(0 if result.get("check", {}).get("agree", True) else 1)

    common = ["--seconds", str(args.seconds), "--windows", str(args.windows), "--rtol", str(args.rtol),
              "--atol", str(args.atol)]
    rows = []
    print("| N | what | hand ms | autograd ms | autograd / hand | best: hand, autograd |\n"
          "|---:|---|---:|---:|---:|---|")
    for n in args.sizes:
        pooled, check = {name: [] for name in UPDATE_VARIANTS}, None
        steps = {name: [] for name in STEP_VARIANTS}
        for _ in range(args.repeats):
            run = run_worker(["--worker", "update", str(n), *common])
            check = run["check"]
            for name, values in run["window_ms"].items():
                pooled[name] += values
            if not args.no_step:
                for name in STEP_VARIANTS:  # alternated, so a burst of load hits both
                    steps[name] += run_worker(["--worker", f"step-{name}", str(n), *common])["window_ms"][name]
        row = {"num_agents": n, "gradient_check": check, "update": {name: summary(v) for name, v in pooled.items()}}
        lines = [("update (backward)", row["update"]["hand"], row["update"]["autograd"]),
                 ("update (fwd+bwd)", row["update"]["hand+forward"], row["update"]["autograd"])]
        if not args.no_step:
            row["step"] = {name: summary(v) for name, v in steps.items()}
            lines.append(("step", row["step"]["hand"], row["step"]["autograd"]))
        rows.append(row)
        for what, hand, auto in lines:
            print(f"| {n} | {what} | {hand['median_ms']:.2f} | {auto['median_ms']:.2f} | "
                  f"{auto['median_ms'] / hand['median_ms']:.2f} | {hand['best_ms']:.2f}, {auto['best_ms']:.2f} |",
                  flush=True)
    report = {"machine": machine(), "seconds": args.seconds, "repeats": args.repeats, "results": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


def machine() -> dict:
    import platform
    return {"python": platform.python_version(), "torch": torch.__version__, "cores": os.cpu_count(),
            "platform": platform.platform()}


if __name__ == "__main__":
    main()
