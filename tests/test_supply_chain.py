"""The supply_chain scenario and its diagnostics (docs/design.md section 9, issue 16 point 2).

References: the recipes and layers as the scenario's docstring states them, hand-worked plans, flows and
value added, cvxpy and a weak-duality certificate for the 7-good market, and the plain heuristic, which
plans no chain, as the contrast for the chain policy."""
import json

import numpy as np
import pytest
import torch
from trade_markets import check_feasible, check_optimal, cvxpy_solution

from agents import make_learner
from homoecon_env import EconomyConfig, Job
from homoecon_env.core import Economy
from homoecon_env.core.production import JobTable
from homoecon_env.core.state import random_tastes
from homoecon_env.diagnostics import supply_chain
from homoecon_env.scenarios import scenario_config
from homoecon_env.trade import clear_market
from homoecon_lab import evaluation
from homoecon_lab.cli import parse_train_args
from homoecon_lab.settings import economy_from_json
from homoecon_lab.training import train

pytestmark = pytest.mark.usefixtures("one_thread")
GOODS = ("grain", "wood", "ore", "flour", "tools", "bread", "furniture")


def table():
    jobs = JobTable.from_config(scenario_config("supply_chain"))
    return jobs.output, jobs.inputs


# -- the scenario --------------------------------------------------------------------------------

def test_supply_chain_has_three_layers_compound_recipes_and_final_goods_valued_most():
    config = scenario_config("supply_chain")
    assert config.resources == GOODS and config.num_resources >= 5
    output, inputs = table()
    # Layers as the scenario states them: raw grain, wood, ore; flour, tools from them; bread, furniture on top.
    assert supply_chain.good_layers(output, inputs).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert supply_chain.final_goods(output, inputs).tolist() == [False] * 5 + [True] * 2
    compound = [job.name for job in config.jobs if job.inputs and sum(v > 0 for v in job.inputs) >= 2]
    assert compound == ["smithing", "baking", "carpentry"]
    # Founders' tastes: exponential draws times taste_scale, so final goods carry most of the weight.
    economy = Economy(config.replace(num_agents=400))
    economy.reset(3)
    tastes = economy.state.utility_weights.numpy()
    np.testing.assert_allclose(tastes.sum(axis=1), 1.0, rtol=1e-12)
    # The share of final goods as NumPy's own exponential draws times the scale give it (200,000 founders).
    draws = np.random.default_rng(0).exponential(size=(200_000, 7)) * np.array(config.taste_scale)
    expected = (draws[:, 5:].sum(axis=1) / draws.sum(axis=1)).mean()
    assert expected > 0.85 and tastes[:, 5:].sum(axis=1).mean() == pytest.approx(expected, abs=0.015)
    assert (tastes[:, 5:].min(axis=1) > tastes[:, :3].max(axis=1)).mean() > 0.5


def test_taste_scale_reweights_the_same_draws_and_is_the_homogeneous_tastes():
    """The same uniforms either way: Exp(1) draws e give e / sum(e) unscaled and e * s / sum(e * s) scaled."""
    draws = random_tastes(5, 3, True, torch.Generator().manual_seed(4))
    scaled = random_tastes(5, 3, True, torch.Generator().manual_seed(4), scale=(1.0, 2.0, 0.0))
    expected = draws * np.array([1.0, 2.0, 0.0])
    np.testing.assert_allclose(scaled, expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)
    same = random_tastes(5, 3, False, torch.Generator(), scale=(1.0, 3.0, 0.0))
    np.testing.assert_array_equal(same, np.tile([0.25, 0.75, 0.0], (5, 1)))


def test_a_taste_scale_of_ones_replays_the_default_economy_bit_for_bit():
    """None (the default) and all ones draw and normalise the same numbers: the default economy is unchanged."""
    def run(config):
        economy = Economy(config)
        economy.reset(5)
        learner = make_learner("scripted", config)
        observation = economy.reset(5)
        for _ in range(30):
            observation = economy.step(learner.act(observation)).observation
        return economy.state
    default = EconomyConfig(num_agents=12, max_age=4)
    assert default.taste_scale is None and EconomyConfig().taste_scale is None
    first, second = run(default), run(default.replace(taste_scale=(1.0, 1.0)))
    for name in ("holdings", "utility_weights", "ages", "agent_ids"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


@pytest.mark.parametrize("value", [(1.0,), (1.0, -1.0), (0.0, 0.0), (1.0, float("nan")), "ab"])
def test_a_bad_taste_scale_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="taste_scale"):
        EconomyConfig(taste_scale=value)


def test_a_config_json_written_before_taste_scale_reads_as_the_default():
    import dataclasses
    data = json.loads(json.dumps(dataclasses.asdict(EconomyConfig())))
    del data["taste_scale"]
    assert economy_from_json(data) == EconomyConfig()
    data = json.loads(json.dumps(dataclasses.asdict(scenario_config("supply_chain"))))
    assert economy_from_json(data) == scenario_config("supply_chain")


# -- layers and the plan ------------------------------------------------------------------------------

def test_layers_of_a_hand_made_table_with_a_diamond_and_an_unmade_good():
    """Goods a, b raw; c from a; d from b and c (layer 2); e made by nobody; f from e (never makeable)."""
    output = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0],
                       [0, 0, 0, 0, 0, 1]], dtype=float)
    inputs = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0],
                       [0, 0, 0, 0, 1, 0]], dtype=float)
    assert supply_chain.good_layers(output, inputs).tolist() == [0, 0, 1, 2, -1, -1]
    assert supply_chain.job_layers(output, inputs).tolist() == [0, 0, 1, 2, -1]


def test_balanced_plan_matches_the_hand_worked_labour_of_one_bread_and_one_furniture():
    """Per bread: 1 baking, which uses 0.5 flour (0.5 milling, 0.5 grain: 0.5 farming) and 0.5 wood. Per
    furniture: 1 carpentry, 0.5 wood, 0.5 tools (0.5 smithing: 0.25 ore, 0.25 wood). Labour: farming 0.5,
    forestry 0.5 + 0.5 + 0.25, mining 0.25, milling 0.5, smithing 0.5, baking 1, carpentry 1; total 5."""
    output, inputs = table()
    plan = supply_chain.balanced_plan(output, inputs, np.array([0, 0, 0, 0, 0, 1.0, 1.0]))
    np.testing.assert_allclose(plan, np.array([0.5, 1.25, 0.25, 0.5, 0.5, 1, 1]) / 5, rtol=1e-12)
    # The property the plan promises: intermediates and raw goods are made exactly as fast as they are used.
    net = (output - inputs).T @ plan
    np.testing.assert_allclose(net[:5], 0.0, atol=1e-12)
    assert net[5] == pytest.approx(net[6]) and net[5] > 0
    assert np.bincount(supply_chain.plan_assignment(plan, 50), minlength=7).tolist() == [5, 13, 2, 5, 5, 10, 10]


# -- recording a step: flows, bottlenecks, value added -------------------------------------------------

def test_a_recorded_step_matches_the_hand_worked_flows_and_bottleneck():
    """Three workers on supply_chain's recipes: a miller with 2 grain works its full day (1 grain in, 1 flour
    out); a baker with 0.1 flour and 3 wood can work 0.1 / 0.5 = 0.2 of the 0.9 it wanted (flour ran out);
    a farmer makes 0.8 grain from nothing."""
    output, inputs = table()
    recorder = supply_chain.ChainRecorder(output, inputs, steps=1)
    before = np.zeros((3, 7))
    before[0, 0], before[1, 3], before[1, 1] = 2.0, 0.1, 3.0
    job, wanted, spent = np.array([3, 5, 0]), np.array([1.0, 0.9, 0.8]), np.array([1.0, 0.2, 0.8])
    pre = before.copy()
    pre[0, 0], pre[0, 3] = 1.0, 1.0  # milling: -1 grain, +1 flour
    pre[1, 3], pre[1, 1], pre[1, 5] = 0.0, 2.9, 0.2  # baking 0.2: -0.1 flour, -0.1 wood, +0.2 bread
    pre[2, 0] = 0.8
    after = pre[[1, 0, 2]]  # the market swaps the first two agents' bundles
    prices = np.full(7, 1 / 7)
    recorder.record(1, before, job, wanted, spent, pre, after, np.zeros((3, 7)), prices)
    chain = recorder.result()
    np.testing.assert_allclose(chain["produced"][0], [0.8, 0, 0, 1.0, 0, 0.2, 0], atol=1e-12)
    np.testing.assert_allclose(chain["used"][0], [1.0, 0.1, 0, 0.1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(chain["lost"][0], [0, 0, 0, 0, 0, 0.7, 0], atol=1e-12)
    assert chain["binding"][5].tolist() == pytest.approx([0, 0, 0, 0.7, 0, 0, 0])  # flour ran out
    np.testing.assert_allclose(chain["traded"][0], 0.5 * np.abs(pre[0] - pre[1]) * 2, atol=1e-12)
    neck = supply_chain.bottleneck(chain, list(GOODS), [job.name for job in scenario_config("supply_chain").jobs])
    assert neck["job"] == "baking" and neck["input"] == "flour" and neck["lost_share"] == pytest.approx(0.7 / 0.9)


def test_value_added_is_the_price_minus_the_market_cost_of_the_inputs_of_one_unit():
    """Prices (grain .05, wood .05, ore .1, flour .1, tools .2, bread .3, furniture .2): flour costs 1 grain
    = .05, adds .05; tools cost .5 ore + .5 wood = .075, add .125; bread .5 flour + .5 wood = .075, adds .225;
    furniture .5 wood + .5 tools = .125, adds .075. A second step at uniform prices adds 0 to flour."""
    output, inputs = table()
    prices = np.array([[0.05, 0.05, 0.1, 0.1, 0.2, 0.3, 0.2], [1 / 7] * 7])
    cost = supply_chain.unit_input_cost(output, inputs, prices)
    assert sorted(cost) == [3, 4, 5, 6]
    np.testing.assert_allclose([cost[g][0] for g in (3, 4, 5, 6)], [0.05, 0.075, 0.075, 0.125], rtol=1e-12)
    recorder = supply_chain.ChainRecorder(output, inputs, steps=2)
    zeros, jobs = np.zeros((2, 7)), np.zeros(2, dtype=np.int64)
    for t in (1, 2):
        recorder.record(t, zeros, jobs, np.zeros(2), np.zeros(2), zeros, zeros, zeros, prices[t - 1])
    summary = supply_chain.summarise_chain(recorder.result(), np.zeros((2, 2), dtype=np.int64),
                                           np.array([[0, 1], [0, 1]]), list(GOODS), ["j"] * 7)
    assert summary["chain_value_added_flour"] == pytest.approx((0.05 + 0.0) / 2)
    assert summary["chain_value_added_bread"] == pytest.approx((0.225 + (1 - 1) / 7) / 2)
    assert summary["chain_value_added_positive_share_tools"] == pytest.approx(0.5)  # uniform prices: equal, not above


# -- the economy runs the chain: conservation, the market, the policies -------------------------------

def run_policy(name: str, steps: int, num_agents: int = 20, seed: int = 0):
    config = scenario_config("supply_chain", num_agents=num_agents, max_steps=steps)
    economy, learner = Economy(config), make_learner(name, config)
    observation = economy.reset(seed)
    totals = {"produced": np.zeros(7), "traded": np.zeros(7), "reward": 0.0}
    for _ in range(steps):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
        totals["produced"] += economy.last_stats["produced"]
        totals["traded"] += 0.5 * np.abs(out.trade.allocation.numpy() - out.pre_trade.numpy()).sum(axis=0)
        totals["reward"] += float(out.reward.mean()) / steps
    return totals


def test_the_chain_policy_makes_and_trades_final_goods_where_the_plain_heuristic_makes_none():
    """Every job works all year, so the plain heuristic's season factor ties and it always farms (the first
    job): no bread, no furniture. The planned chain makes and trades both, and earns more."""
    plain, chain = run_policy("scripted", 60), run_policy("scripted_chain", 60)
    assert plain["produced"][1:].sum() == 0
    assert (chain["produced"] > 0).all()
    assert chain["produced"][5:].sum() > 2 * 60  # over 2 final goods a step for 20 agents
    assert chain["traded"][5:].sum() > 60 and chain["traded"][3:5].sum() > 60
    assert chain["reward"] > plain["reward"]


def test_the_seven_good_market_of_the_chain_meets_the_cvxpy_optimum_and_its_certificate():
    """Markets of the scenario itself (N = 20, R = 7): chain workers' trade weights put half their weight on
    inputs, and some goods are absent. The solver's objective meets cvxpy's, and its duals certify it."""
    config = scenario_config("supply_chain", num_agents=20)
    economy, learner = Economy(config), make_learner("scripted_chain", config)
    observation = economy.reset(2)
    checked = 0
    for t in range(25):
        actions = learner.act(observation)
        out = economy.step(actions)
        observation = out.observation
        if t in (0, 12, 24):
            holdings = out.pre_trade.numpy()
            weights = Economy.normalised_trade_weights(actions.trade_weights.double().numpy())
            result = clear_market(holdings, weights)
            check_feasible(result, holdings, weights)
            check_optimal(result, holdings, weights, gap=1e-6)
            optimum = cvxpy_solution(holdings, weights)[0]
            assert abs(result.objective - optimum) <= 1e-4 * max(1.0, abs(optimum))
            checked += 1
    assert checked == 3


# -- train.py and evaluate.py -------------------------------------------------------------------

def test_train_and_evaluate_run_the_scenario_and_report_the_chain(tmp_path):
    run_dir = tmp_path / "run"
    train(parse_train_args(["--scenario", "supply_chain", "--steps", "8", "--num-agents", "12", "--run-dir",
                            str(run_dir), "--log-every", "4", "--dashboard-every", "0"]))
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["run"]["scenario"] == "supply_chain" and saved["economy"]["taste_scale"][5] == 1.0
    out = tmp_path / "eval"
    result = evaluation.evaluate(evaluation.Args(run=str(run_dir), out=str(out), steps=12, seeds=2, frames=1,
                                                 ablation_seeds=0, workers=1))
    chain = result["supply_chain"]
    assert chain["layers"] == dict(zip(GOODS, [0, 0, 0, 1, 1, 2, 2])) and chain["final_goods"] == ["bread", "furniture"]
    assert set(chain["references"]) == {"reinforce (evaluated)", "scripted_chain", "scripted", "random"}
    assert chain["references"]["scripted"]["chain_final_produced_late"]["mean"] == 0.0
    assert chain["references"]["scripted_chain"]["chain_final_produced_late"]["mean"] > 0
    report = (out / "report.md").read_text()
    assert "## Supply chain" in report and "Does a division of labour along the chain emerge?" in report
    for name in ("chain_output", "chain_flow", "chain_value_added", "chain_bottlenecks"):
        assert (out / result["figures"][name]).stat().st_size > 0
    # The seed economy's report has no chain section.
    plain = evaluation.evaluate(evaluation.Args(out=str(tmp_path / "seed"), steps=6, seeds=1, frames=1,
                                                ablation_seeds=0, workers=1, num_agents=6, learner="random"))
    assert "supply_chain" not in plain and "## Supply chain" not in (tmp_path / "seed" / "report.md").read_text()


def test_inputs_nobody_makes_leave_a_good_unlayered_and_a_plan_needing_them_is_refused():
    output, inputs = np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])  # good 1 from good 0, which nobody makes
    assert supply_chain.good_layers(output, inputs).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="good 1 is demanded by the plan but no job makes it"):
        supply_chain.balanced_plan(output, inputs, np.array([0.0, 1.0]))


def test_chain_policy_state_round_trips_and_a_custom_chain_economy_gets_a_plan():
    jobs = (Job("farm", output=(1.0, 0.0, 0.0)), Job("mill", output=(0.0, 1.0, 0.0), inputs=(1.0, 0.0, 0.0)),
            Job("bake", output=(0.0, 0.0, 1.0), inputs=(0.5, 0.5, 0.0)))
    config = EconomyConfig(num_agents=8, resources=("grain", "flour", "bread"), jobs=jobs, need=(1.0, 1.0, 1.0))
    learner = make_learner("scripted_chain", config)
    # Demand 1 bread: 1 baking (0.5 grain, 0.5 flour), 0.5 milling (0.5 grain), farming 0.5 + 0.5 = 1.
    np.testing.assert_allclose(learner.plan, np.array([1.0, 0.5, 1.0]) / 2.5, rtol=1e-12)
    other = make_learner("scripted_chain", config)
    other.load_state_dict(learner.state_dict())
    assert other.state_dict().keys() == learner.state_dict().keys()
