"""SuperSuit recipe: HomoEcon's fixed-slot view as one Gymnasium-style vector env, one batched policy.

    python examples/supersuit_vec.py                      # E=4 economies of N=50 agents, ~3 minutes
    python examples/supersuit_vec.py --iterations 3       # a quick smoke run

What it does
    `supersuit.pettingzoo_env_to_vec_env_v1` turns one slot view (N slots, docs/design.md section 8) into a
    vector env of N sub-envs; `supersuit.concat_vec_envs_v1` stacks E copies of it (seeded seed, seed+1,
    ...), giving one vector env of M = E * N sub-envs. One small torch network acts on the whole
    [M, obs] batch (parameters shared by every slot of every economy) and is trained by advantage
    actor-critic: REINFORCE with a learned value baseline and n-step returns over short rollouts.
    At the end it prints the mean reward per agent-step of the trained policy and of uniformly random
    actions on the same vector env from the same seed.

Layout (row m of every array is slot m % N of economy m // N)
    observations [M, S + K*P + K] float32: row m is slot_{m % N}'s flat observation
                  [self S | peers K*P | peer_mask K], holdings squashed to h / (1 + h).
    actions      [M, B + J + 1 + 2R] float32: [broadcast B | job scores J (argmax) | effort 1 |
                  trade_weights R | consume R]; finite values outside the box are clipped by the env.
    rewards, terminations, truncations [M]; infos: a list of M dicts.
    `vec_env.observation_space` / `action_space` are the spaces of ONE sub-env (SuperSuit's convention).

Episodes: with on_death="terminate" a slot's occupant dying sets terminations[m] = True and the slot
goes on with the newborn (the vector-env auto-reset convention). At max_steps every slot of that
economy is truncated and SuperSuit resets that economy by itself (its last observations are in
infos[m]["terminal_observation"]); the vector env keeps going. SuperSuit's own rules to know:
  - it resets an economy whenever ALL its slots are done at once, so a step in which every
    occupant dies (a mass starvation) also starts a new episode there;
  - on the step of a reset, infos[m] holds the new episode's reset infos (agent_id, born, died, ...
    of the last step are overwritten);
  - per-agent wrappers (normalize_obs_v0, clip_actions_v0, agent_indicator_v0, dtype_v0, ...) go
    through PettingZoo's AEC conversion, where a terminated agent must leave: use them with
    on_death="continue" (deaths then show only in infos[m]["died"]).
"""
import argparse
import copy
import time

import numpy as np
import supersuit
import torch
from torch import nn

from homoecon_env import slot_parallel_env


def make_vec_env(num_envs: int, num_agents: int, max_steps: int):
    """One vector env of num_envs * num_agents slots (num_cpus=0: all in this process)."""
    env = slot_parallel_env(num_agents=num_agents, max_steps=max_steps, on_death="terminate")
    vec_env = supersuit.pettingzoo_env_to_vec_env_v1(env)
    return supersuit.concat_vec_envs_v1(vec_env, num_vec_envs=num_envs, num_cpus=0, base_class="gymnasium")


class Policy(nn.Module):
    """Gaussian policy over the flat action box (mean inside the box, one learned std per dimension)
    and a value head used as the baseline; shared by every slot."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.mean_head = nn.Linear(hidden, len(action_low))
        self.value_head = nn.Linear(hidden, 1)
        self.register_buffer("center", torch.as_tensor((action_high + action_low) / 2))
        self.register_buffer("half_width", torch.as_tensor((action_high - action_low) / 2))
        self.log_std = nn.Parameter(torch.log(0.5 * self.half_width.clone()))

    def forward(self, obs: torch.Tensor):
        hidden = self.body(obs)  # [M, hidden]
        mean = self.center + self.half_width * torch.tanh(self.mean_head(hidden))  # [M, A]
        return torch.distributions.Normal(mean, self.log_std.exp()), self.value_head(hidden).squeeze(-1)


def discounted_returns(rewards, dones, last_value, gamma):
    """n-step returns [T, M]: G_t = r_t + gamma * G_{t+1}, cut where a slot's episode ended (done)
    and bootstrapped with the value of the observation after the rollout. (A truncation at max_steps
    is cut like a death, without bootstrapping: a small bias, kept for brevity.)"""
    returns = torch.zeros_like(rewards)
    running = last_value
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        returns[t] = running
    return returns


def mean_reward(vec_env, act, steps: int, seed: int) -> float:
    """Mean reward per agent-step of `act(obs) -> actions` over `steps` vector steps from `seed`."""
    obs, _ = vec_env.reset(seed=seed)
    total = 0.0
    for _ in range(steps):
        obs, rewards, _, _, _ = vec_env.step(act(obs))
        total += float(rewards.mean())
    return total / steps


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (a clear usage error otherwise)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=positive_int, default=4, help="E economies in the vector env")
    parser.add_argument("--num-agents", type=positive_int, default=50, help="N slots per economy")
    parser.add_argument("--max-steps", type=positive_int, default=200, help="episode length of each economy")
    parser.add_argument("--iterations", type=positive_int, default=60, help="rollout + update iterations")
    parser.add_argument("--rollout-steps", type=positive_int, default=16, help="vector steps per rollout")
    parser.add_argument("--eval-steps", type=positive_int, default=100, help="vector steps of the final comparison")
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--entropy-coef", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # -- seeding and env ----------------------------------------------------------------------
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vec_env = make_vec_env(args.num_envs, args.num_agents, args.max_steps)
    low, high = vec_env.action_space.low, vec_env.action_space.high
    policy = Policy(vec_env.observation_space.shape[0], low, high)
    initial_state = copy.deepcopy(policy.state_dict())
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr)
    print(f"vector env: {vec_env.num_envs} sub-envs = {args.num_envs} economies x {args.num_agents} slots; "
          f"obs {vec_env.observation_space.shape}, action {vec_env.action_space.shape}")

    # -- training: rollout of T vector steps, then one actor-critic update --------------------
    start = time.perf_counter()
    obs, _ = vec_env.reset(seed=args.seed)
    for iteration in range(1, args.iterations + 1):
        log_probs, values, entropies, rewards, dones = [], [], [], [], []
        for _ in range(args.rollout_steps):
            dist, value = policy(torch.as_tensor(obs))
            action = dist.sample()  # [M, A]; the env clips what falls outside the box
            obs, reward, terminated, truncated, _ = vec_env.step(action.numpy())
            log_probs.append(dist.log_prob(action).sum(-1))
            values.append(value)
            entropies.append(dist.entropy().sum(-1))
            rewards.append(torch.as_tensor(reward))
            dones.append(torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32))
        with torch.no_grad():
            last_value = policy(torch.as_tensor(obs))[1]
        returns = discounted_returns(torch.stack(rewards), torch.stack(dones), last_value, args.gamma)
        values = torch.stack(values)
        advantages = (returns - values).detach()
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(torch.stack(log_probs) * advantages).mean()
        value_loss = 0.5 * (returns - values).pow(2).mean()
        loss = policy_loss + value_loss - args.entropy_coef * torch.stack(entropies).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"iteration {iteration}: loss is {loss.item()}; stopping before the update")
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        if iteration % 10 == 0 or iteration == args.iterations:
            print(f"iter {iteration:4d}  reward/step {torch.stack(rewards).mean().item():.4f}  "
                  f"loss {loss.item():.4f}  value_loss {value_loss.item():.4f}  "
                  f"{time.perf_counter() - start:.0f}s")

    # -- evaluation: the trained policy (mean action) vs uniform random actions ---------------
    with torch.no_grad():
        trained = mean_reward(vec_env, lambda o: policy(torch.as_tensor(o))[0].mean.numpy(),
                              args.eval_steps, args.seed + 1000)
    random = mean_reward(vec_env, lambda o: rng.uniform(low, high, (len(o), len(low))).astype(np.float32),
                         args.eval_steps, args.seed + 1000)
    vec_env.close()
    print(f"mean reward per agent-step: trained {trained:.4f}  random {random:.4f}  "
          f"({time.perf_counter() - start:.0f}s)")
    return {"trained_reward": trained, "random_reward": random, "final_loss": loss.item(), "policy": policy,
            "initial_state": initial_state}


if __name__ == "__main__":
    main()
