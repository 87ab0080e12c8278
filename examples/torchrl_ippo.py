"""IPPO on HomoEcon with TorchRL: every slot of the economy learns with one shared PPO policy.

TorchRL's `PettingZooWrapper` wraps the fixed-slot view (`homoecon_env.slot_parallel_env`,
docs/design.md section 8), which keeps `slot_0 .. slot_{N-1}` for the whole episode and flattens the observation and
the action into one Box each. All slots form one group, "slot", so a batch holds [time, N] of
everything. The loop is TorchRL's own pieces: a `Collector`, a `ProbabilisticActor` with a
`TanhNormal` on the flat action box, `ClipPPOLoss` with GAE advantages, and a replay buffer that
serves the minibatches.

Why IPPO (each slot's critic sees only its own observation) rather than MAPPO: the slot observation
already shows every peer's last broadcast, id and holdings (K = N - 1 peers by default), so a
centralised critic would add little information at 50 times the input size. Parameters are shared
across slots (one actor, one critic), the cheap and usual choice for a population of identical roles.
A slot's occupant changes when an agent dies; with the default `on_death="continue"` the slot's
return runs on through its newborn (a lineage view), with `--on-death terminate` each death ends the
slot's trajectory for GAE (the env is reset only when every slot is done, `done_on_any=False`).

Run (about two minutes on 2 CPU cores with the defaults):

    python examples/torchrl_ippo.py
    python examples/torchrl_ippo.py --iterations 2 --steps-per-batch 20   # a quick smoke run

At the end it prints the trained policy's mean reward per agent-step beside a uniform random
policy's, both over the same seeds and steps.
"""
import time
from dataclasses import dataclass
from typing import Literal

import torch
import tyro
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector, RandomPolicy
from torchrl.data import LazyTensorStorage, ReplayBuffer, SamplerWithoutReplacement
from torchrl.envs import PettingZooWrapper
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MultiAgentMLP, ProbabilisticActor, TanhNormal
from torchrl.objectives import ClipPPOLoss, ValueEstimators

from homoecon_env import slot_parallel_env

GROUP = "slot"  # TorchRL groups agents named slot_<k> under "slot"


@dataclass
class Args:
    num_agents: int = 50
    """population size (slots) of the economy"""
    max_steps: int = 1000
    """episode length of the economy; the collector resets it when every slot is truncated"""
    on_death: Literal["continue", "terminate"] = "continue"
    """slot view death rule: "continue" (deaths in infos only) or "terminate" (a death ends the slot's trajectory)"""
    seed: int = 0
    """seed of torch and of the economy"""
    iterations: int = 40
    """collect-then-update rounds"""
    steps_per_batch: int = 100
    """env steps collected per iteration (each step is num_agents agent-steps)"""
    epochs: int = 4
    """passes of PPO over each batch"""
    minibatch_steps: int = 25
    """env steps per minibatch (times num_agents agent-steps)"""
    learning_rate: float = 3e-4
    gamma: float = 0.9
    """discount: rewards are immediate (consumption), so a short horizon learns fastest"""
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.2
    entropy_coef: float = 1e-3
    hidden: int = 64
    """width of the actor's and critic's two hidden layers"""
    eval_steps: int = 200
    """env steps per evaluation episode (trained and random policy alike)"""
    eval_seeds: int = 2
    """evaluation episodes, seeds seed+1000 .. seed+1000+eval_seeds-1"""


def make_env(args: Args, seed: int, **economy) -> PettingZooWrapper:
    """The slot view wrapped for TorchRL: one group "slot" with [N, ...] observation, action, reward, done.
    `economy`: further EconomyConfig fields (e.g. max_age=3)."""
    slots = slot_parallel_env(num_agents=args.num_agents, max_steps=args.max_steps, on_death=args.on_death,
                              **economy)
    # done_on_any=False: the economy is reset only when every slot is done (the episode's end), not
    # at the first death when on_death="terminate".
    return PettingZooWrapper(slots, seed=seed, done_on_any=False)  # a ParallelEnv: parallel API


def make_actor_and_critic(env: PettingZooWrapper, hidden: int):
    """One shared actor (TanhNormal on the flat action box) and one shared critic on each slot's own observation."""
    observation_size = env.observation_spec[GROUP, "observation"].shape[-1]
    action_spec = env.full_action_spec[GROUP, "action"]
    num_agents, action_size = action_spec.shape
    policy_net = nn.Sequential(
        MultiAgentMLP(n_agent_inputs=observation_size, n_agent_outputs=2 * action_size, n_agents=num_agents,
                      centralized=False, share_params=True, depth=2, num_cells=hidden, activation_class=nn.Tanh),
        NormalParamExtractor(),  # [..., 2 * A] -> loc [..., A], scale [..., A] > 0
    )
    policy = TensorDictModule(policy_net, in_keys=[(GROUP, "observation")], out_keys=[(GROUP, "loc"), (GROUP, "scale")])
    actor = ProbabilisticActor(
        policy,
        spec=env.full_action_spec,
        in_keys=[(GROUP, "loc"), (GROUP, "scale")],
        out_keys=[(GROUP, "action")],
        distribution_class=TanhNormal,
        # per-dimension bounds: broadcast and job scores in [-1, 1], effort, trade weights, consume in [0, 1]
        distribution_kwargs={"low": action_spec.space.low[0], "high": action_spec.space.high[0]},
        return_log_prob=True,
    )
    critic_net = MultiAgentMLP(n_agent_inputs=observation_size, n_agent_outputs=1, n_agents=num_agents,
                               centralized=False, share_params=True, depth=2, num_cells=hidden,
                               activation_class=nn.Tanh)
    critic = TensorDictModule(critic_net, in_keys=[(GROUP, "observation")], out_keys=[(GROUP, "state_value")])
    return actor, critic


def mean_reward_per_agent_step(env: PettingZooWrapper, policy, seeds: list, steps: int) -> float:
    """Mean slot reward over `steps` steps from reset(seed) for each seed (exploration off for the actor)."""
    totals = []
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for seed in seeds:
            torch.manual_seed(seed)  # the random policy's draws
            start = env.reset(seed=seed)
            rollout = env.rollout(steps, policy, auto_reset=False, tensordict=start, break_when_any_done=False)
            totals.append(rollout["next", GROUP, "reward"].mean())
    return float(torch.stack(totals).mean())


def main(args: Args) -> dict:
    if not 0 < args.minibatch_steps <= args.steps_per_batch:
        raise ValueError(f"minibatch_steps must be in [1, steps_per_batch={args.steps_per_batch}], "
                         f"got {args.minibatch_steps}")
    # One intra-op thread: the tensors are small and the wrapper works agent by agent, so extra
    # threads only contend (on a busy 2-core machine they made a run several times slower).
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    env = make_env(args, args.seed)
    actor, critic = make_actor_and_critic(env, args.hidden)

    collector = Collector(env, actor, frames_per_batch=args.steps_per_batch,
                          total_frames=args.steps_per_batch * args.iterations)
    buffer = ReplayBuffer(storage=LazyTensorStorage(args.steps_per_batch), sampler=SamplerWithoutReplacement(),
                          batch_size=args.minibatch_steps)

    loss_module = ClipPPOLoss(actor_network=actor, critic_network=critic, clip_epsilon=args.clip_epsilon,
                              entropy_coeff=args.entropy_coef, normalize_advantage=False)
    loss_module.set_keys(reward=(GROUP, "reward"), action=(GROUP, "action"), value=(GROUP, "state_value"),
                         done=(GROUP, "done"), terminated=(GROUP, "terminated"))
    loss_module.make_value_estimator(ValueEstimators.GAE, gamma=args.gamma, lmbda=args.gae_lambda)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.learning_rate)

    eval_env = make_env(args, args.seed)  # its own economy, so evaluating never moves the collector's
    seeds = [args.seed + 1000 + k for k in range(args.eval_seeds)]
    untrained = mean_reward_per_agent_step(eval_env, actor, seeds, args.eval_steps)

    start, losses = time.perf_counter(), []
    for iteration, batch in enumerate(collector, start=1):
        # rollout: batch is [steps_per_batch] env steps, with [steps_per_batch, N, ...] under "slot"
        with torch.no_grad():
            loss_module.value_estimator(batch, params=loss_module.critic_network_params,
                                        target_params=loss_module.target_critic_network_params)
        buffer.extend(batch)
        # update: epochs x minibatches of whole env steps (all slots of a step together)
        for _ in range(args.epochs):
            for _ in range(args.steps_per_batch // args.minibatch_steps):
                terms = loss_module(buffer.sample())
                loss = terms["loss_objective"] + terms["loss_critic"] + terms["loss_entropy"]
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(loss_module.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
        collector.update_policy_weights_()  # the collector acts with the updated actor from here
        reward = float(batch["next", GROUP, "reward"].mean())
        print(f"iter {iteration:3d}/{args.iterations}  reward/agent-step {reward:7.4f}  loss {losses[-1]:8.4f}  "
              f"entropy {float(terms['entropy']):7.3f}  {time.perf_counter() - start:6.1f} s", flush=True)
    collector.shutdown()

    trained = mean_reward_per_agent_step(eval_env, actor, seeds, args.eval_steps)
    random = mean_reward_per_agent_step(eval_env, RandomPolicy(eval_env.full_action_spec), seeds, args.eval_steps)
    print(f"mean reward per agent-step over {args.eval_seeds} x {args.eval_steps} steps: trained {trained:.4f}  "
          f"untrained {untrained:.4f}  random {random:.4f}  ({time.perf_counter() - start:.0f} s in all)")
    eval_env.close()
    return {"trained": trained, "untrained": untrained, "random": random, "losses": losses}


if __name__ == "__main__":
    main(tyro.cli(Args))
