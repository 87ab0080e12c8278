"""Named economies: the scenario registry (docs/design.md section 9).

A scenario is a function that takes no arguments and returns an `EconomyConfig`; `SCENARIOS` maps
its name to it. Every entry point picks one by name and treats it as the economy's base settings,
to which the caller's own settings are applied on top:

    parallel_env(scenario="seed", num_agents=80)       # also env, raw_env, slot_parallel_env, slot_env
    scenario_config("seed", num_agents=80)             # the EconomyConfig itself
    python train.py --scenario seed --num-agents 80    # only the economy flags given override it
    python evaluate.py --scenario seed                 # with --run: the run's scenario, from config.json

``"seed"`` is the default: `EconomyConfig()`, the economy of docs/design.md section 2 unchanged.

Adding a scenario is one function and one line in `SCENARIOS`::

    def supply_chain() -> EconomyConfig:
        \"\"\"Raw goods -> intermediates -> final goods (docs/design.md section 9).\"\"\"
        return EconomyConfig(resources=(...), jobs=(...))

    SCENARIOS = {"seed": seed, "supply_chain": supply_chain}

The function's docstring is the scenario's one-line description. Nothing else needs to change:
`train.py --scenario supply_chain`, `evaluate.py --scenario supply_chain`, the env constructors and
the validation of every name all read `SCENARIOS`. A run records its scenario's name in
config.json (``run.scenario``); the economy it trained is the full `economy` object stored beside
it, so a scenario whose function changes later does not change what an old run was.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from homoecon_env.config import EconomyConfig, Job


def seed() -> EconomyConfig:
    """The seed's economy: 50 agents, berries and meat, gathering and hunting (docs/design.md section 2)."""
    return EconomyConfig()


def supply_chain() -> EconomyConfig:
    """Raw goods -> intermediates -> final goods: grain, wood, ore -> flour, tools -> bread, furniture.

    Seven goods, seven jobs, three layers (docs/design.md section 9). Raw jobs need nothing; milling turns
    grain into flour; smithing, baking and carpentry are compound recipes of two inputs each (per unit of
    effort, 0.5 + 0.5 in, 1 out). Bread sits three layers deep (grain -> flour -> bread), and so does
    furniture (ore -> tools -> furniture); wood feeds both branches. Every job works all year (a season
    far longer than any run), so the chain, not the calendar, decides what is worth making. Founders'
    tastes weigh each final good 50 times a raw good and 20 times an intermediate (``taste_scale``), so
    value comes from the end of the chain, and children blend their parents' tastes without mutation
    (``mutation=0``): with the seed's mutation, selection on reward lets tastes drift to whatever the
    population already makes (measured: REINFORCE's population went from 0.89 to 0.21 of its taste on final
    goods in 10,000 steps), and the chain would lose its point. ``need`` counts every good, so nobody
    starves who eats anything.
    """
    year_round = 1e9  # steps: cos^2 of the season angle stays within 3e-6 of 1 for a million steps
    goods = ("grain", "wood", "ore", "flour", "tools", "bread", "furniture")

    def amounts(**per_good: float) -> tuple[float, ...]:
        return tuple(float(per_good.get(good, 0.0)) for good in goods)

    jobs = (
        Job("farming", output=amounts(grain=1), period=year_round),
        Job("forestry", output=amounts(wood=1), period=year_round),
        Job("mining", output=amounts(ore=1), period=year_round),
        Job("milling", output=amounts(flour=1), inputs=amounts(grain=1), period=year_round),
        Job("smithing", output=amounts(tools=1), inputs=amounts(ore=0.5, wood=0.5), period=year_round),
        Job("baking", output=amounts(bread=1), inputs=amounts(flour=0.5, wood=0.5), period=year_round),
        Job("carpentry", output=amounts(furniture=1), inputs=amounts(wood=0.5, tools=0.5), period=year_round),
    )
    tastes = amounts(grain=0.02, wood=0.02, ore=0.02, flour=0.05, tools=0.05, bread=1, furniture=1)
    return EconomyConfig(resources=goods, jobs=jobs, need=(1.0,) * len(goods), taste_scale=tastes, mutation=0.0)


# private_signals: seasons so long that they never turn within an episode (the boom is the only
# thing that moves yields), so a peer-ignoring agent has nothing to go by but its tastes.
_FLAT_SEASON = 1e9  # steps
_GROUNDS = 4


def private_signals() -> EconomyConfig:
    """The positive control: a lasting boom that scouts see privately and the rest only through peers (section 11)."""
    return EconomyConfig(
        num_agents=40, num_peers=8, private_signals=True, boom_multiplier=3.0, boom_switch=0.1, scout_fraction=0.25,
        jobs=tuple(Job(f"ground_{k}", output=(0.5, 0.5), period=_FLAT_SEASON) for k in range(_GROUNDS)))


def spatial() -> EconomyConfig:
    """A 4 x 4 world of 80 agents: berries in the west, meat in the east, local markets, costly migration (section 13).

    Each region has its own market, so prices may differ across regions; agents see their own region's
    coordinates and last prices, and 8 peers from their own and the neighbouring regions (``peer_radius=1``).
    Yields (``resource_map``): gathering berries pays 1.6, 1.2, 0.8, 0.4 times the seed's from the west
    column to the east, hunting meat the reverse (0.4 .. 1.6), both scaled by 1.25, 1.1, 0.9, 0.75 from
    the north row to the south, so each region has a comparative advantage and the north is richer. Seasons
    are shifted by pi/4 per column (``region_phase_shift``): the berry harvest moves across the map. A move
    costs 5% of every holding (``migration_cost``), and output per worker of a job in a region falls as
    min(1, 3 / workers on it there) (``carrying_capacity=3``): with 5 agents per region on average, a
    crowded rich region is a commons worth leaving. It models the law of one price under trade frictions,
    migration towards yields and away from crowds, and inequality across regions.
    """
    width = height = 4
    berries = (1.6, 1.2, 0.8, 0.4)  # by column, west to east
    meat = (0.4, 0.8, 1.2, 1.6)
    richness = (1.25, 1.1, 0.9, 0.75)  # by row, north to south
    resource_map = tuple((berries[x] * richness[y], meat[x] * richness[y])
                         for y in range(height) for x in range(width))  # row g = y * width + x
    return EconomyConfig(num_agents=80, num_peers=8, world_width=width, world_height=height,
                         resource_map=resource_map, region_phase_shift=math.pi / 4, migration_cost=0.05,
                         peer_radius=1, carrying_capacity=3.0)


SCENARIOS: dict[str, Callable[[], EconomyConfig]] = {
    "seed": seed,
    "supply_chain": supply_chain,
    "private_signals": private_signals,
    "spatial": spatial,
}


def check_scenario(name) -> str:
    """``name`` when it names a registered scenario; else ValueError naming it and the known names."""
    if not isinstance(name, str) or name not in SCENARIOS:
        raise ValueError(f"scenario {name!r} is not a known scenario; known: {', '.join(sorted(SCENARIOS))}")
    return name


def scenario_config(name: str, **overrides) -> EconomyConfig:
    """The scenario's EconomyConfig with ``overrides`` (EconomyConfig fields) applied.

    ValueError when ``name`` is unknown (naming it and the known names), when the scenario's function
    does not return an EconomyConfig, or when an override is not a field or not a valid value.
    """
    config = SCENARIOS[check_scenario(name)]()
    if not isinstance(config, EconomyConfig):
        raise ValueError(f"scenario {name!r}: its function must return an EconomyConfig, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def env_config(config: Optional[EconomyConfig], scenario: Optional[str], overrides: dict) -> EconomyConfig:
    """The economy of an env constructor's ``config=``, ``scenario=`` and ``**overrides``.

    - neither: `EconomyConfig()` with the overrides;
    - ``config`` alone: that config with the overrides;
    - ``scenario`` alone: `scenario_config(scenario, **overrides)`;
    - both: ValueError (a scenario *is* a config; say which one you mean).
    """
    if config is not None and not isinstance(config, EconomyConfig):
        raise ValueError(f"config must be an EconomyConfig or None, got {type(config).__name__}")
    if scenario is not None:
        if config is not None:
            raise ValueError(f"config and scenario={scenario!r} were both given; pass one: scenario=NAME with "
                             "EconomyConfig fields as keyword overrides, or config=EconomyConfig(...)")
        return scenario_config(scenario, **overrides)
    config = config if config is not None else EconomyConfig()
    return config.replace(**overrides) if overrides else config
