"""HomoEcon: an artificial economy of learning agents as a PettingZoo ParallelEnv.

    from homoecon_env import EconomyConfig, parallel_env, env
    from homoecon_env import slot_parallel_env, slot_env  # fixed slots, flat Box spaces
    from homoecon_env import SCENARIOS, scenario_config   # named economies: parallel_env(scenario="seed")
"""
from homoecon_env.config import EconomyConfig, Job
from homoecon_env.core.economy import MarketNotConvergedWarning, NonFiniteStateError
from homoecon_env.env import HomoEconEnv, env, parallel_env, raw_env
from homoecon_env.scenarios import SCENARIOS, scenario_config
from homoecon_env.slot_env import SlotParallelEnv, slot_env, slot_parallel_env

__all__ = ["SCENARIOS", "EconomyConfig", "HomoEconEnv", "Job", "MarketNotConvergedWarning", "NonFiniteStateError",
           "SlotParallelEnv", "env", "parallel_env", "raw_env", "scenario_config", "slot_env", "slot_parallel_env"]
