"""HomoEcon as a BenchMARL task: the fixed-slot view (docs/design.md section 8) under BenchMARL's IPPO.

BenchMARL builds its environments through a `TaskClass`: `get_env_fun` returns a TorchRL env (here
TorchRL's `PettingZooWrapper` over `homoecon_env.slot_parallel_env`, all slots in one group "slot"),
and a few methods tell BenchMARL which entries of the env's specs are observations, infos and
actions. A `Task` enum names the task, so `HomoEconTask.SLOTS.get_task(config={...})` gives a
configured task without a yaml file. The config is any set of `EconomyConfig` fields plus
`on_death` ("continue" or "terminate").

Run a short IPPO experiment (about two minutes on 2 CPU cores; logs go to a CSV folder it prints):

    python examples/benchmarl_task.py
    python examples/benchmarl_task.py --max-frames 400 --frames-per-batch 200   # a quick smoke run

Swap `IppoConfig` for `MappoConfig` (or any continuous-action BenchMARL algorithm) to compare.
"""
import copy
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Literal, Optional

import torch
import tyro
from benchmarl.algorithms import IppoConfig
from benchmarl.environments.common import Task, TaskClass
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig
from torchrl.data import Composite
from torchrl.envs import EnvBase, PettingZooWrapper

from homoecon_env import EconomyConfig, slot_parallel_env

GROUP = "slot"  # TorchRL groups agents named slot_<k> under "slot"


class HomoEconSlotsClass(TaskClass):
    """The slot view of the economy as a BenchMARL task (continuous flat actions, one group)."""

    def get_env_fun(self, num_envs: int, continuous_actions: bool, seed: Optional[int],
                    device) -> Callable[[], EnvBase]:
        config = copy.deepcopy(self.config)
        # num_envs is ignored: the env is not batched, so BenchMARL stacks num_envs copies in a SerialEnv.
        # done_on_any=False: with on_death="terminate" a death ends that slot's trajectory only; the
        # economy is reset when every slot is done (max_steps).
        return lambda: PettingZooWrapper(slot_parallel_env(**config), seed=seed, device=device, done_on_any=False)

    def supports_continuous_actions(self) -> bool:
        return True

    def supports_discrete_actions(self) -> bool:
        return False  # the flat action box is continuous; the job is the argmax of its scores

    def max_steps(self, env: EnvBase) -> int:
        return self.config.get("max_steps", EconomyConfig.max_steps)  # evaluation rollouts: one episode

    def has_render(self, env: EnvBase) -> bool:
        return False

    def group_map(self, env: EnvBase) -> Dict[str, List[str]]:
        return env.group_map

    def _only(self, env: EnvBase, key: str) -> Composite:
        """The env's observation spec with just `key` ("observation" or "info") under each group."""
        spec = env.observation_spec.clone()
        for group in self.group_map(env):
            for other in [k for k in spec[group].keys() if k != key]:
                del spec[group][other]
        return spec

    def observation_spec(self, env: EnvBase) -> Composite:
        return self._only(env, "observation")

    def info_spec(self, env: EnvBase) -> Optional[Composite]:
        return self._only(env, "info")  # agent_id, actor_id, generation, born, died, death_cause

    def state_spec(self, env: EnvBase) -> Optional[Composite]:
        return None  # no global state: MAPPO's critic then reads all slots' observations

    def action_spec(self, env: EnvBase) -> Composite:
        return env.full_action_spec

    def action_mask_spec(self, env: EnvBase) -> Optional[Composite]:
        return None

    @staticmethod
    def env_name() -> str:
        return "homoecon"


class HomoEconTask(Task):
    """The HomoEcon tasks (one: the whole economy as fixed slots)."""

    SLOTS = None

    @staticmethod
    def associated_class():
        return HomoEconSlotsClass


@dataclass
class Args:
    num_agents: int = 20
    """population size (slots)"""
    max_steps: int = 200
    """episode length of the economy"""
    on_death: Literal["continue", "terminate"] = "continue"
    """slot view death rule: "continue" or "terminate" """
    max_frames: int = 4000
    """env steps to train for (each is num_agents agent-steps)"""
    frames_per_batch: int = 400
    """env steps collected per iteration"""
    seed: int = 0
    save_folder: Optional[str] = None
    """where BenchMARL writes its CSV logs (default: a fresh temporary folder)"""


def make_experiment(args: Args, **economy) -> Experiment:
    """IPPO on the slot view. `economy`: further EconomyConfig fields (e.g. max_age=3)."""
    task = HomoEconTask.SLOTS.get_task(config={"num_agents": args.num_agents, "max_steps": args.max_steps,
                                               "on_death": args.on_death, **economy})
    config = ExperimentConfig.get_from_yaml()
    config.max_n_frames = args.max_frames
    config.on_policy_collected_frames_per_batch = args.frames_per_batch
    config.on_policy_n_envs_per_worker = 1  # one economy; its slots are the batch
    config.on_policy_minibatch_size = min(100, args.frames_per_batch)
    config.on_policy_n_minibatch_iters = 4
    config.lr = 3e-4
    config.gamma = 0.9
    config.evaluation = False  # experiment.evaluate() still runs evaluation_episodes episodes on demand
    config.evaluation_episodes = 1
    config.render = False
    config.loggers = ["csv"]
    config.create_json = False
    config.checkpoint_at_end = False
    config.save_folder = args.save_folder or tempfile.mkdtemp(prefix="benchmarl_homoecon_")
    return Experiment(task=task, algorithm_config=IppoConfig.get_from_yaml(), model_config=MlpConfig.get_from_yaml(),
                      critic_model_config=MlpConfig.get_from_yaml(), seed=args.seed, config=config)


def main(args: Args) -> Experiment:
    torch.set_num_threads(1)  # small tensors, per-agent work in the wrapper: extra threads only contend
    experiment = make_experiment(args)
    experiment.run()
    print(f"mean episode return per slot in the last batch: {experiment.mean_return:.3f}; "
          f"{experiment.total_frames} env steps; logs in {experiment.folder_name}")
    return experiment


if __name__ == "__main__":
    main(tyro.cli(Args))
