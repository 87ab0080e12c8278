"""Space in the core (issue 17, docs/design.md section 13): regions, migration, regional yields and
seasons, crowding, local peers, the move action in both views, checkpoints.

Every check is against an independent reference: the default economy run beside a 1x1 world, a
hand-worked two-region step, the goods ledger, a brute-force pool of allowed peers, PettingZoo's own
test utilities, a straight run against a resumed one.
"""
import copy
import dataclasses
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test
from test_env_api import strict

import homoecon_env
from homoecon_env import EconomyConfig
from homoecon_env.core import Actions, Economy
from homoecon_env.scenarios import scenario_config
from homoecon_env.slot_env import slot_env, slot_parallel_env
from homoecon_lab.settings import economy_from_json

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
# A small world where every space mechanism acts: 3 x 2 regions, moves cost, crowding, neighbours seen.
SMALL = dict(world_width=3, world_height=2, migration_cost=0.1, carrying_capacity=2.0, num_peers=4, peer_radius=1,
             resource_map=((2.0, 0.5), (1.0, 1.0), (0.5, 2.0), (1.5, 0.2), (0.2, 1.5), (1.0, 0.0)),
             region_phase_shift=0.7)


def random_actions(n: int, config: EconomyConfig, g: torch.Generator, move: bool = True) -> Actions:
    return Actions(broadcast=torch.rand(n, config.broadcast_dim, generator=g, dtype=F64) * 2 - 1,
                   job=torch.randint(0, config.num_jobs, (n,), generator=g),
                   effort=torch.rand(n, generator=g, dtype=F64),
                   trade_weights=torch.rand(n, config.num_resources, generator=g, dtype=F64),
                   consume=torch.rand(n, config.num_resources, generator=g, dtype=F64),
                   move=torch.randint(0, 5, (n,), generator=g) if move else None)


def random_dict_actions(env, rng: np.random.Generator) -> dict:
    space = env.action_space(env.agents[0])
    out = {}
    for name in env.agents:
        out[name] = {"broadcast": rng.uniform(-1, 1, space["broadcast"].shape).astype(np.float32),
                     "job": int(rng.integers(space["job"].n)),
                     "effort": rng.uniform(0, 1, (1,)).astype(np.float32),
                     "trade_weights": rng.uniform(0, 1, space["trade_weights"].shape).astype(np.float32),
                     "consume": rng.uniform(0, 1, space["consume"].shape).astype(np.float32)}
        if "move" in space.spaces:
            out[name]["move"] = int(rng.integers(5))
    return out


def assert_same_state(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y) or (x.is_floating_point() and x.shape == y.shape
                                         and torch.equal(x.nan_to_num(7.5), y.nan_to_num(7.5))
                                         and torch.equal(x.isnan(), y.isnan())), field.name
        else:
            assert x == y, field.name


# -- the 1x1 world is the default economy -----------------------------------------------------------
@pytest.mark.parametrize("space_fields", [
    dict(world_width=1, world_height=1, resource_map=None, region_phase_shift=0.0, migration_cost=0.0,
         peer_radius=0, carrying_capacity=0.0),
    dict(resource_map=((1.0, 1.0),), region_phase_shift=2.0, migration_cost=0.4, peer_radius=3),
])
def test_a_1x1_world_without_capacity_reproduces_the_default_economy_bit_for_bit(space_fields):
    """300 steps with births and deaths: the defaults spelled out, and a 1x1 world whose space fields can
    change nothing (a map of ones, a shift of column 0, a cost nobody pays, a radius beyond the grid)."""
    base = dict(num_agents=16, max_steps=320, num_peers=5, yield_noise=0.3)
    default, world = Economy(EconomyConfig(**base)), Economy(EconomyConfig(**base, **space_fields))
    assert not world.config.spatial
    default.reset(7)
    world.reset(7)
    g = torch.Generator().manual_seed(1)
    deaths = 0
    for _ in range(300):
        actions = random_actions(16, default.config, g)  # a move is given: outside a spatial world it is ignored
        a, b = default.step(actions), world.step(actions)
        deaths += int((a.death_cause > 0).sum())
        assert torch.equal(a.reward, b.reward) and torch.equal(a.observation.self_features,
                                                               b.observation.self_features)
        assert torch.equal(a.observation.peers, b.observation.peers)
    assert deaths > 50
    assert_same_state(default.state, world.state)
    assert torch.equal(default.generator.get_state(), world.generator.get_state())
    assert world.state.region.eq(0).all() and world.state.region_prices.shape == (1, 2)
    np.testing.assert_array_equal(world.state.region_prices[0].numpy(), world.last_stats["prices"])
    assert "region_prices" not in world.last_stats  # the default figures, unchanged


def test_the_named_env_of_a_1x1_world_has_no_move_and_no_region_infos():
    env = homoecon_env.parallel_env(num_agents=5, max_steps=5)
    assert "move" not in env.action_space("agent_0").spaces
    _, infos = env.reset(seed=1)
    assert infos == {f"agent_{k}": {} for k in range(5)}
    assert env.observation_space("agent_0")["self"].shape == (20,)


# -- a hand-worked two-region step ----------------------------------------------------------------
def test_a_hand_worked_two_region_step_yields_crowding_migration_cost_and_edge_moves():
    """W = 2, H = 1. Region 0 (x = 0) multiplies gathering by 2 and hunting by 0.5, region 1 (x = 1)
    by 1 and 3; region 1's seasons are shifted by pi/2. At t = 0 gathering (phase pi/2) is out of
    season in region 0 (cos^2(pi/2) = 0) and in full season in region 1 (cos^2(pi) = 1); hunting
    (phase 0) the reverse. Capacity 1.5: two workers on a job in a region produce 0.75 each.

    Before: regions [0, 0, 1, 1], holdings all (1, 2). Moves: stay, east, west, east (off the edge).
    After moves: regions [0, 1, 0, 1]; agents 1 and 2 moved and pay 10%: holdings (0.9, 1.8).
    Jobs: 0 and 2 hunt in region 0: 1 * 0.5 * 0.75 = 0.375 meat each;
          1 and 3 gather in region 1: 1 * 1 * 0.75 = 0.75 berries each.
    """
    config = EconomyConfig(num_agents=4, max_steps=10, world_width=2, world_height=1, yield_noise=0.0,
                           resource_map=((2.0, 0.5), (1.0, 3.0)), region_phase_shift=math.pi / 2,
                           migration_cost=0.1, carrying_capacity=1.5, max_age=100, min_consumption=0.0)
    assert config.spatial and config.num_regions == 2
    economy = Economy(config)
    economy.reset(0)
    snapshot = economy.state_dict()
    state = snapshot["state"]
    state["region"] = torch.tensor([0, 0, 1, 1])
    state["holdings"] = torch.tensor([[1.0, 2.0]] * 4, dtype=F64)
    state["ages"] = torch.zeros(4, dtype=torch.int64)
    economy.load_state_dict(snapshot)
    actions = Actions(broadcast=torch.zeros(4, 6, dtype=F64), job=torch.tensor([1, 0, 1, 0]),
                      effort=torch.ones(4, dtype=F64), trade_weights=torch.ones(4, 2, dtype=F64),
                      consume=torch.zeros(4, 2, dtype=F64), move=torch.tensor([0, 4, 3, 4]))
    out = economy.step(actions)
    after_moves = np.array([[1.0, 2.0], [0.9, 1.8], [0.9, 1.8], [1.0, 2.0]])
    produced = np.array([[0.0, 0.375], [0.75, 0.0], [0.0, 0.375], [0.75, 0.0]])
    np.testing.assert_allclose(out.pre_trade.numpy(), after_moves + produced, rtol=0, atol=1e-12)
    assert economy.state.region.tolist() == [0, 1, 0, 1]
    stats = economy.last_stats
    np.testing.assert_allclose(stats["migration_lost"], [0.2, 0.4], rtol=1e-12)
    assert stats["movers"] == 2  # the east move off the edge is no move, and free
    assert stats["region_traders"].tolist() == [2, 2] and stats["region_population"].tolist() == [2, 2]
    # each region's market conserves its own goods: nothing crosses between regions
    allocation = out.trade.allocation.numpy()
    for rows in ([0, 2], [1, 3]):
        np.testing.assert_allclose(allocation[rows].sum(axis=0), out.pre_trade.numpy()[rows].sum(axis=0),
                                   rtol=1e-9)
    assert stats["region_prices"].shape == (2, 2)
    np.testing.assert_allclose(np.nansum(stats["region_prices"], axis=1), [1.0, 1.0], rtol=1e-9)
    # the observation: own coordinates x / (W - 1), y / (H - 1 or 1), then the region's prices
    own = out.observation.self_features.numpy()
    np.testing.assert_array_equal(own[:, -4:-2], [[0, 0], [1, 0], [0, 0], [1, 0]])
    prices = np.nan_to_num(stats["region_prices"], nan=0.0)
    np.testing.assert_allclose(own[:, -2:], prices[[0, 1, 0, 1]], rtol=1e-6)


def test_season_and_map_shape_output_per_region_without_crowding():
    """One worker per (region, job): no crowding. Hunting's season at t = 0 in column x is
    cos^2(0 + 0.7 x): x = 0 -> 1, x = 2 -> cos^2(1.4)."""
    config = EconomyConfig(num_agents=3, max_steps=5, world_width=3, world_height=1, yield_noise=0.0,
                           resource_map=((1.0, 1.0), (1.0, 2.0), (1.0, 4.0)), region_phase_shift=0.7,
                           carrying_capacity=1.0, max_age=100, min_consumption=0.0)
    economy = Economy(config)
    economy.reset(0)
    snapshot = economy.state_dict()
    snapshot["state"]["region"] = torch.tensor([0, 1, 2])
    snapshot["state"]["ages"] = torch.zeros(3, dtype=torch.int64)
    economy.load_state_dict(snapshot)
    before = economy.state.holdings.clone()
    stay = torch.zeros(3, dtype=torch.int64)
    out = economy.step(Actions(torch.zeros(3, 6, dtype=F64), torch.tensor([1, 1, 1]), torch.ones(3, dtype=F64),
                               torch.ones(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64), stay))
    meat = (out.pre_trade - before)[:, 1].numpy()
    np.testing.assert_allclose(meat, [1.0, 2.0 * math.cos(0.7) ** 2, 4.0 * math.cos(1.4) ** 2], rtol=1e-12)


# -- the ledger -----------------------------------------------------------------------------------
def test_the_goods_ledger_closes_every_step_with_migration_losses():
    config = EconomyConfig(num_agents=30, max_steps=200, max_age=6, **SMALL)
    economy = Economy(config)
    economy.reset(5)
    g = torch.Generator().manual_seed(2)
    paid_total, births = 0.0, 0
    for _ in range(150):
        before = economy.state.holdings.numpy().copy()
        region_before = economy.state.region.numpy().copy()
        out = economy.step(random_actions(30, config, g))
        s = economy.last_stats
        after = economy.state.holdings.numpy().sum(axis=0)
        expected = before.sum(axis=0) + s["produced"] - s["inputs_used"] - s["consumed"] - s["decayed"] \
            - s["lost"] + s["founder_endowment"] - s["migration_lost"]
        np.testing.assert_allclose(expected, after, rtol=1e-9, atol=1e-9)
        # an independent count of what movers paid: 10% of the holdings of each slot whose region changed
        moved = out.dying_state.region != region_before
        np.testing.assert_allclose(s["migration_lost"], 0.1 * before[moved].sum(axis=0), rtol=1e-12, atol=1e-15)
        assert s["movers"] == int(moved.sum())
        paid_total += float(s["migration_lost"].sum())
        births += s["births"]
    assert paid_total > 0 and births > 0


# -- peers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius, k", [(0, 3), (1, 4), (1, 40), (2, 2)])
def test_peers_always_come_from_live_agents_in_allowed_regions(radius, k):
    config = EconomyConfig(num_agents=40, max_steps=60, max_age=5,
                           **{**SMALL, "peer_radius": radius, "num_peers": k, "world_width": 4, "world_height": 3,
                              "resource_map": None})
    economy = Economy(config)
    economy.reset(11)
    g = torch.Generator().manual_seed(3)
    seen = set()
    for step in range(60):
        obs = economy.observation if step == 0 else economy.step(random_actions(40, config, g)).observation
        state = economy.state_arrays
        x, y = state.region % 4, state.region // 4
        index, mask = obs.peer_index.numpy(), obs.peer_mask.numpy()
        for i in range(40):  # the brute-force pool: live others within the Chebyshev radius
            pool = {j for j in range(40) if j != i and state.alive[j]
                    and max(abs(x[i] - x[j]), abs(y[i] - y[j])) <= radius}
            shown = [j for j in index[i].tolist() if j >= 0]
            assert set(shown) <= pool and len(set(shown)) == len(shown)
            assert len(shown) == min(k, len(pool))  # everyone when the pool is small, else K distinct
            np.testing.assert_array_equal(mask[i], index[i] >= 0)
            seen.update((int(state.agent_ids[i]), int(state.agent_ids[j])) for j in shown)
        assert not obs.peers.numpy()[mask == 0].any()  # padding is zeros
    assert len(seen) > 200  # samples vary over steps


# -- births ---------------------------------------------------------------------------------------
def test_newborns_appear_in_their_first_parents_region():
    config = EconomyConfig(num_agents=30, max_steps=100, max_age=4, **SMALL)
    economy = Economy(config)
    economy.reset(4)
    g = torch.Generator().manual_seed(4)
    checked = 0
    for _ in range(80):
        out = economy.step(random_actions(30, config, g))
        born = out.births.born.numpy()
        parents = out.births.parent_slots.numpy()[born]
        regions_after_moves = out.dying_state.region
        np.testing.assert_array_equal(economy.state.region.numpy()[born], regions_after_moves[parents[:, 0]])
        checked += int(born.sum())
    assert checked > 100


def test_founders_are_spread_over_the_regions_when_fewer_than_two_survive():
    """max_age = 1: everyone dies every step, so every newborn is a founder, placed uniformly."""
    config = EconomyConfig(num_agents=20, max_steps=60, max_age=1, **SMALL)
    economy = Economy(config)
    economy.reset(9)
    g = torch.Generator().manual_seed(9)
    counts = np.zeros(6)
    for _ in range(50):
        out = economy.step(random_actions(20, config, g))
        assert out.births.founders == 20
        counts += np.bincount(economy.state.region.numpy(), minlength=6)
    # 1000 uniform draws over 6 regions: each count within 5 sigma of 1000/6
    assert np.all(np.abs(counts - 1000 / 6) < 5 * math.sqrt(1000 * (1 / 6) * (5 / 6)))


# -- bad moves ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, words", [(5, "out of range"), (-1, "out of range"), (1.5, "not an int"),
                                          ("east", "not an int"), (True, "not an int")])
def test_a_bad_move_is_refused_naming_agent_and_key_and_the_env_is_unchanged(value, words):
    env = homoecon_env.parallel_env(num_agents=6, max_steps=20, **SMALL)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    env.step(random_dict_actions(env, rng))
    before = copy.deepcopy(env.economy.state_dict())
    agents, actions = list(env.agents), random_dict_actions(env, rng)
    actions[agents[2]]["move"] = value
    with pytest.raises(ValueError, match=rf"{agents[2]}: action 'move' is {words}"):
        env.step(actions)
    del actions[agents[2]]["move"]
    with pytest.raises(ValueError, match=rf"{agents[2]}: action has no 'move'"):
        env.step(actions)
    after = env.economy.state_dict()
    assert env.agents == agents
    assert_same_state(homoecon_env.core.EconomyState(**before["state"]),
                      homoecon_env.core.EconomyState(**after["state"]))
    assert torch.equal(before["generator"], after["generator"])


def test_the_batched_core_refuses_a_missing_or_bad_move_naming_the_agent():
    config = EconomyConfig(num_agents=5, max_steps=20, **SMALL)
    economy = Economy(config)
    economy.reset(1)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="action 'move' is missing: it is required when the world is spatial"):
        economy.step(random_actions(5, config, g, move=False))
    actions = random_actions(5, config, g)
    bad = actions.move.double()
    bad[3] = math.nan
    with pytest.raises(ValueError, match=r"agent_3: action 'move' is not an int"):
        economy.step(dataclasses.replace(actions, move=bad))
    assert economy.state.step == 0


# -- the views ------------------------------------------------------------------------------------
def test_pettingzoo_api_tests_pass_in_a_spatial_world():
    strict(lambda: parallel_api_test(homoecon_env.parallel_env(num_agents=12, max_steps=60, **SMALL),
                                     num_cycles=200))
    strict(lambda: api_test(homoecon_env.env(num_agents=8, max_steps=40, **SMALL), num_cycles=150))
    with warnings.catch_warnings():  # the flat slot view: every warning an error
        warnings.simplefilter("error")
        parallel_api_test(slot_parallel_env(num_agents=8, max_steps=40, **SMALL), num_cycles=150)
        api_test(slot_env(num_agents=8, max_steps=40, **SMALL), num_cycles=150)
    strict(lambda: parallel_api_test(slot_parallel_env(flatten=False, num_agents=8, max_steps=40, **SMALL),
                                     num_cycles=100))


def test_the_slot_view_and_the_named_env_give_the_same_spatial_trajectory():
    """The flat action's last 5 columns score the moves (argmax): a one-hot there is the Dict's move."""
    kw = dict(num_agents=10, max_steps=40, max_age=5, **SMALL)
    named, slots = homoecon_env.parallel_env(**kw), slot_parallel_env(**kw)
    named.reset(seed=8)
    slots.reset(seed=8)
    assert slots.action_space("slot_0").shape == (6 + 2 + 1 + 2 + 2 + 5,)
    rng = np.random.default_rng(1)
    for _ in range(30):
        chosen = random_dict_actions(named, rng)
        flat = {}
        for slot, name in enumerate(named._slot_names):
            a = chosen[name]
            flat[f"slot_{slot}"] = np.concatenate([a["broadcast"], np.eye(2)[a["job"]], a["effort"],
                                                   a["trade_weights"], a["consume"], np.eye(5)[a["move"]]])
        _, rewards, _, _, infos = named.step(chosen)
        _, slot_rewards, _, _, slot_infos = slots.step(flat)
        assert [rewards[n] for n in rewards if n in chosen] == [slot_rewards[f"slot_{i}"] for i in range(10)]
        assert [slot_infos[f"slot_{i}"]["region"] for i in range(10)] == named.economy.state.region.tolist()
        assert all(infos[n]["region"] == named.economy.state_arrays.region[i]
                   for i, n in enumerate(named._slot_names))
    assert torch.equal(named.economy.state.holdings, slots.economy.state.holdings)


# -- checkpoints and config files -------------------------------------------------------------------
def test_a_spatial_economy_resumes_bit_exactly_from_a_saved_snapshot():
    config = EconomyConfig(num_agents=20, max_steps=100, max_age=5, **SMALL)
    straight = Economy(config)
    straight.reset(6)
    g = torch.Generator().manual_seed(6)
    for _ in range(20):
        straight.step(random_actions(20, config, g))
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    later = [random_actions(20, config, g) for _ in range(25)]
    buffer.seek(0)
    resumed = Economy(config)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for actions in later:
        a, b = straight.step(actions), resumed.step(actions)
        assert torch.equal(a.reward, b.reward)
        assert torch.equal(a.observation.peer_index, b.observation.peer_index)
        assert torch.equal(a.observation.self_features, b.observation.self_features)
    assert_same_state(straight.state, resumed.state)


def test_a_snapshot_saved_before_space_existed_loads_as_a_1x1_world():
    config = EconomyConfig(num_agents=8, max_steps=50)
    economy, old = Economy(config), Economy(config)
    economy.reset(2)
    g = torch.Generator().manual_seed(2)
    economy.step(random_actions(8, config, g, move=False))
    snapshot = copy.deepcopy(economy.state_dict())
    for name in ("region", "region_prices"):
        del snapshot["state"][name]
    old.load_state_dict(snapshot)
    assert old.state.region.eq(0).all()
    torch.testing.assert_close(old.state.region_prices, economy.state.region_prices, rtol=0, atol=0)
    for _ in range(10):
        actions = random_actions(8, config, g, move=False)
        assert torch.equal(economy.step(actions).reward, old.step(actions).reward)
    with pytest.raises(ValueError, match="no 'region'"):
        Economy(EconomyConfig(num_agents=8, **SMALL)).load_state_dict(snapshot)


@pytest.mark.parametrize("field, value", [
    ("world_width", 0), ("world_height", 1.5), ("world_height", True), ("migration_cost", 1.2),
    ("migration_cost", math.nan), ("peer_radius", -1), ("carrying_capacity", -0.5), ("carrying_capacity", math.inf),
    ("region_phase_shift", math.inf), ("resource_map", ((1.0, 1.0),)), ("resource_map", ((1.0,),) * 6),
    ("resource_map", ((1.0, -1.0),) * 6), ("resource_map", ((1.0, math.nan),) * 6), ("resource_map", "ones"),
])
def test_a_bad_space_field_is_refused_naming_it(field, value):
    fields = {**SMALL, field: value}
    with pytest.raises(ValueError, match=rf"^{field}"):
        EconomyConfig(**fields)


def test_a_spatial_config_reads_back_from_json_unchanged():
    config = scenario_config("spatial")
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert economy_from_json(data) == config
    assert isinstance(economy_from_json(data).resource_map[0], tuple)


def test_the_spatial_scenario_makes_regions_differ_and_runs():
    config = scenario_config("spatial", max_steps=30)
    assert config.spatial and config.num_regions == 16 and config.migration_cost > 0
    yields = np.array(config.resource_map)
    assert yields[:, 0].argmax() != yields[:, 1].argmax()  # berries and meat are rich in different regions
    env = homoecon_env.parallel_env(config)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    while env.agents:
        env.step(random_dict_actions(env, rng))
    stats = env.last_stats
    # the last step has deaths and no births: the population counts the live
    assert stats["region_population"].sum() == env.economy.state.alive.sum() and stats["region_prices"].shape == (16, 2)


# -- territory ------------------------------------------------------------------------------------
def brute_force_control(region, lineage, alive, num_regions):
    """Per region: (the lineage with most live members, lowest id on ties; -1 if empty), share."""
    from collections import Counter
    control, share = [], []
    for g in range(num_regions):
        members = Counter(int(line) for r, line, live in zip(region, lineage, alive) if live and r == g)
        if not members:
            control.append(-1)
            share.append(0.0)
            continue
        most = max(members.values())
        control.append(min(line for line, count in members.items() if count == most))
        share.append(most / sum(members.values()))
    return control, share


def test_region_control_follows_first_parent_lineages_and_counts_its_changes():
    config = EconomyConfig(num_agents=30, max_steps=100, max_age=4, **SMALL)
    economy = Economy(config)
    economy.reset(12)
    assert economy.state.lineage.tolist() == list(range(30))  # each founder roots its own lineage
    g = torch.Generator().manual_seed(12)
    changes = 0
    for _ in range(60):
        before = economy.state_arrays
        out = economy.step(random_actions(30, config, g))
        state, stats = economy.state_arrays, economy.last_stats
        born = out.births.born.numpy()
        first_parent = out.births.parent_slots.numpy()[born, 0]
        np.testing.assert_array_equal(state.lineage[born], before.lineage[first_parent])
        control, share = brute_force_control(state.region, state.lineage, state.alive, 6)
        assert stats["region_control"].tolist() == control
        np.testing.assert_allclose(stats["region_control_share"], share, rtol=1e-12)
        previous, _ = brute_force_control(before.region, before.lineage, before.alive, 6)
        assert stats["control_changes"] == sum(a != b for a, b in zip(control, previous))
        changes += stats["control_changes"]
    assert changes > 0 and len(set(economy.state.lineage.tolist())) < 30  # lineages die out, control moves
