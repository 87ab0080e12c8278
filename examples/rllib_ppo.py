"""RLlib PPO (new API stack) on HomoEcon's fixed-slot view, one policy shared by every slot.

    pip install -e '.[rllib]'
    python examples/rllib_ppo.py --iterations 5

What it does: `homoecon_env.slot_parallel_env` (docs/design.md section 8: agents `slot_0 ..
slot_{N-1}`, one flat float32 Box observation and action per slot) is wrapped in RLlib's
`ParallelPettingZooEnv`, the wrapper RLlib documents for PettingZoo parallel envs. PPO runs on the
new API stack (RLModule, Learner, EnvRunner): default MLP encoder, diagonal Gaussian over the flat
action Box (RLlib rescales [-1, 1] to the Box bounds; the env also clips), one `shared` module
trained on every slot's experience (parameter sharing). Sampling and learning both happen in this
process (`num_env_runners=0`, `num_learners=0`), so it runs on a laptop; raise
`--num-env-runners` to sample in parallel Ray workers.

Deaths: the view runs with `on_death="continue"` (deaths only in infos; a slot's newborn goes on
in the same RLlib episode, so PPO's returns run across occupants of a slot). `"terminate"` does
not fit RLlib: it sends no more actions for an agent once terminated, while every slot must act
every step (the slot view then raises "slot_k: no action given").

Seeding: `--seed` seeds torch, NumPy and the env's first reset; RLlib walks the slots through Python
sets, so a run repeats exactly only under a fixed hash seed: `PYTHONHASHSEED=0 python ...`.

Each iteration prints env steps sampled (one env step = every slot acting once), the mean episode
return (summed over slots, as RLlib reports multi-agent returns) and the PPO losses.
"""
import dataclasses
import math
import time

import ray
import torch
import tyro
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
from ray.tune.registry import register_env

from homoecon_env import slot_parallel_env

ENV_NAME = "homoecon_slots"
SHARED_POLICY = "shared"


@dataclasses.dataclass
class Args:
    iterations: int = 3
    """PPO iterations (each samples `train_batch_size` env steps, then updates)"""
    num_agents: int = 10
    """slots in the economy (EconomyConfig.num_agents)"""
    max_steps: int = 100
    """episode length in env steps (EconomyConfig.max_steps); every slot is truncated there"""
    train_batch_size: int = 1000
    """env steps sampled per iteration (num_agents times as many agent steps reach the learner)"""
    minibatch_size: int = 1000
    """agent steps per SGD minibatch"""
    num_epochs: int = 4
    """passes over each iteration's batch"""
    lr: float = 3e-4
    """Adam learning rate"""
    num_env_runners: int = 0
    """0: sample in this process; n > 0: n Ray worker processes"""
    num_cpus: int = 2
    """CPUs Ray may use when this script starts it"""
    seed: int = 0
    """seeds RLlib (torch, numpy, env resets)"""
    torch_threads: int = 1
    """torch threads in this process: the networks and the economy are small, and more threads mostly contend"""


def make_env(env_config: dict) -> ParallelPettingZooEnv:
    """RLlib env creator: the flat fixed-slot view as an RLlib MultiAgentEnv. `env_config` holds
    EconomyConfig overrides, e.g. {"num_agents": 10, "max_steps": 100}."""
    return ParallelPettingZooEnv(slot_parallel_env(on_death="continue", flatten=True, **env_config))


def build_config(args: Args) -> PPOConfig:
    """The PPO config: env, parameter sharing, batch sizes. New API stack is RLlib's default."""
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config={"num_agents": args.num_agents, "max_steps": args.max_steps})
        .multi_agent(
            # Parameter sharing: every slot maps to the one `shared` module.
            policies={SHARED_POLICY},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: SHARED_POLICY,
            # One module per slot instead (independent learners):
            #   policies={f"slot_{i}" for i in range(args.num_agents)},
            #   policy_mapping_fn=lambda agent_id, episode, **kwargs: agent_id,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=1)
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=args.train_batch_size,
            minibatch_size=args.minibatch_size,
            num_epochs=args.num_epochs,
            lr=args.lr,
        )
        .debugging(seed=args.seed, log_level="ERROR")
    )


def main(args: Args) -> list[dict]:
    """Train `args.iterations` PPO iterations; print and return each iteration's summary."""
    torch.set_num_threads(args.torch_threads)
    register_env(ENV_NAME, make_env)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    algo = build_config(args).build_algo()
    summaries = []
    try:
        for iteration in range(1, args.iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            seconds = time.perf_counter() - start
            runners, losses = result["env_runners"], result["learners"][SHARED_POLICY]
            summary = {
                "iteration": iteration,
                "env_steps": int(runners["num_env_steps_sampled"]),
                "agent_steps": int(runners["num_module_steps_sampled"][SHARED_POLICY]),
                "episodes": int(runners.get("num_episodes", 0)),
                "episode_len_mean": float(runners.get("episode_len_mean", math.nan)),
                "episode_return_mean": float(runners.get("episode_return_mean", math.nan)),
                "policy_loss": float(losses["policy_loss"]),
                "vf_loss": float(losses["vf_loss"]),
                "entropy": float(losses["entropy"]),
                "seconds": seconds,
            }
            summaries.append(summary)
            print(f"iter {iteration}: env steps {summary['env_steps']}, "
                  f"episode return mean {summary['episode_return_mean']:.3f}, "
                  f"policy loss {summary['policy_loss']:.4f}, vf loss {summary['vf_loss']:.4f}, "
                  f"{seconds:.1f} s ({summary['env_steps'] / seconds:.0f} env steps/s)", flush=True)
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()
    return summaries


if __name__ == "__main__":
    main(tyro.cli(Args))
