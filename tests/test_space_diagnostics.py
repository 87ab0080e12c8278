"""Space diagnostics (docs/design.md section 13): hand-worked maps, dispersion, control and flows; the figures as
real image files; and, once the spatial scenario exists, evaluate.py's Space section end to end."""
from __future__ import annotations

import math
import os

import imageio.v3 as iio
import numpy as np
import pytest

from homoecon_env.diagnostics import space
from homoecon_env.diagnostics.plots import save_figure
from homoecon_env.diagnostics.plots import space as space_plots

# -- maps ---------------------------------------------------------------------------------------------------


def test_region_counts_and_means_per_step_skip_dead_rows_and_leave_empty_regions_nan():
    region = np.array([[0, 0, 2, 2], [1, 1, 1, 0]])
    wealth = np.array([[1.0, 3.0, 10.0, 4.0], [2.0, 4.0, 9.0, 7.0]])
    alive = np.array([[True, True, True, False], [True, True, True, True]])
    assert space.region_counts(region, 3, alive).tolist() == [[2, 0, 1], [1, 3, 0]]
    means = space.region_means(region, wealth, 3, alive)
    assert means[0, 0] == 2.0 and math.isnan(means[0, 1]) and means[0, 2] == 10.0
    assert means[1, 0] == 7.0 and means[1, 1] == 5.0 and math.isnan(means[1, 2])


def test_region_xy_follows_the_row_major_index():
    x, y = space.region_xy([0, 1, 2, 3, 5], width=3)
    assert x.tolist() == [0, 1, 2, 0, 2] and y.tolist() == [0, 0, 0, 1, 1]


# -- the law of one price ------------------------------------------------------------------------------------


def test_price_dispersion_is_the_mean_std_of_log_prices_over_occupied_regions():
    # goods 0 and 1 in regions 0 and 1 (region 2 empty): std of two logs = half their gap
    prices = np.array([[0.5, 0.5], [0.2, 0.8], [np.nan, np.nan]])
    expected = (math.log(0.5 / 0.2) / 2 + math.log(0.8 / 0.5) / 2) / 2  # = ln(2) / 2
    assert space.price_dispersion(prices) == pytest.approx(expected)
    assert space.price_dispersion(prices) == pytest.approx(math.log(2) / 2)


def test_price_dispersion_is_zero_for_one_price_and_nan_with_one_occupied_region():
    same = np.array([[[0.3, 0.7], [0.3, 0.7], [0.3, 0.7]],
                     [[0.3, 0.7], [np.nan, np.nan], [np.nan, np.nan]]])
    result = space.price_dispersion(same)
    assert result[0] == pytest.approx(0.0, abs=1e-15) and math.isnan(result[1])


def test_price_dispersion_is_scale_free_and_refuses_a_negative_price():
    prices = np.array([[0.1, 0.9], [0.4, 0.6], [0.25, 0.75]])
    # a common factor on one good in every region is a shift in log: the spread stays
    assert space.price_dispersion(prices * [3.0, 1.0]) == pytest.approx(space.price_dispersion(prices))
    with pytest.raises(ValueError, match="region_prices"):
        space.price_dispersion(np.array([[-0.1, 1.1], [0.5, 0.5]]))


def test_price_dispersion_leaves_out_lone_agents_and_zero_prices_good_by_good():
    prices = np.array([[0.5, 0.5], [0.2, 0.8], [0.0, 1.0], [0.9, 0.1]])
    population = np.array([3, 2, 4, 1])  # region 3: a lone agent, no market; region 2: nobody holds good 0
    good_0 = math.log(0.5 / 0.2) / 2  # regions 0 and 1
    good_1 = np.std(np.log([0.5, 0.8, 1.0]))  # regions 0, 1 and 2
    assert space.price_dispersion(prices, population) == pytest.approx((good_0 + good_1) / 2)
    assert math.isnan(space.price_dispersion(prices[:, :1], [3, 1, 4, 1]))  # a single market for good 0


def test_dispersion_trend_recovers_an_exponential_decay_rate_per_100_steps():
    steps = np.arange(1, 201)
    assert space.dispersion_trend(0.5 * np.exp(-0.01 * steps)) == pytest.approx(-1.0)
    halving = 0.3 * 0.5 ** (steps / 100)
    assert space.dispersion_trend(halving) == pytest.approx(-math.log(2))
    assert space.dispersion_trend([np.nan, 0.2, np.nan]) is None


# -- territory -----------------------------------------------------------------------------------------------
# Five rows, three regions, four steps (hand-worked; founder lineage ids 3, 5, 7, 9).
REGION = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 2, 2, 2], [0, 0, 2, 2, 2]])
LINEAGE = np.array([[7, 7, 3, 3, 5], [7, 3, 3, 5, 5], [7, 3, 3, 5, 5], [7, 9, 3, 5, 5]])


def test_control_goes_to_the_largest_lineage_with_ties_to_the_incumbent_then_the_oldest():
    controller, share = space.controllers(REGION, LINEAGE, 3)
    assert controller.tolist() == [
        [7, 3, -1],  # region 1: 3 and 5 tie, no incumbent -> the smaller id 3
        [3, 5, -1],  # both overtaken
        [3, -1, 5],  # region 0: 7 and 3 tie, the incumbent 3 keeps it; region 1 emptied
        [7, -1, 5],  # region 0: 7 and 9 tie, the incumbent is gone -> the smaller id 7
    ]
    assert share[0, 0] == pytest.approx(2 / 3) and share[0, 1] == pytest.approx(1 / 2) and math.isnan(share[0, 2])
    assert share[2, 2] == pytest.approx(2 / 3)


def test_changes_of_control_count_only_handovers_between_occupied_steps():
    controller, _ = space.controllers(REGION, LINEAGE, 3)
    changes = space.control_changes(controller)
    assert changes.tolist() == [[False, False, False], [True, True, False], [False, False, False],
                                [True, False, False]]  # emptying region 1 and settling region 2 are no handovers


def test_control_reward_gap_is_members_minus_others_in_the_same_region():
    controller, _ = space.controllers(REGION, LINEAGE, 3)
    reward = np.array([[1.0, 3.0, 5.0, 4.0, 6.0]] * 4)
    gap = space.control_reward_gap(reward, REGION, LINEAGE, controller)
    assert gap[0, 0] == pytest.approx(2.0 - 5.0)  # lineage 7 (rows 0, 1) against row 2
    assert gap[0, 1] == pytest.approx(4.0 - 6.0)  # lineage 3 (row 3) against row 4
    assert math.isnan(gap[0, 2])  # empty
    assert gap[2, 2] == pytest.approx(5.0 - 5.0)  # lineage 5 (rows 3, 4: 4 and 6) against row 2 (5)
    assert gap[3, 0] == pytest.approx(1.0 - 3.0)


def test_lineage_rows_follow_the_first_parent_line():
    agents = {0: {"parents": ()}, 1: {"parents": ()}, 2: {"parents": (1, 0)}, 3: {"parents": (2, 0)}}
    assert space.lineage_rows([[0, 1], [3, 2]], agents).tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="agent_9"):
        space.lineage_rows([[9]], agents)


# -- migration -----------------------------------------------------------------------------------------------


def test_migration_flows_count_moves_of_the_same_agent_between_consecutive_steps():
    regions = np.array([[0, 1, 1], [1, 1, 0], [1, 0, 1]])
    ids = np.array([[0, 1, 2], [0, 1, 5], [0, 1, 5]])  # row 2 changed hands after step 0 (a death and a birth)
    flows, moves = space.migration_flows(regions, ids, 2)
    assert flows.tolist() == [[0, 2], [1, 2]]  # from 0 to 1: row 0 then row 2; from 1 to 0: row 1
    assert moves.tolist() == [1, 2]
    assert space.net_inflow(flows).tolist() == [-1.0, 1.0]


def test_sweep_results_give_each_cost_a_mean_with_an_interval_and_the_cost_correlation():
    def outcome(late):
        return {"space_dispersion_late": late, "space_moves_per_step": 1.0}

    result = space.sweep_results({0.0: [outcome(0.1), outcome(0.3)], 1.0: [outcome(0.5), outcome(0.7)]})
    arm = result["arms"]["0.0"]["space_dispersion_late"]
    assert arm["mean"] == pytest.approx(0.2) and arm["per_seed"] == [0.1, 0.3]
    # two samples 0.2 apart: half-width t(0.975, 1) * s / sqrt(2) with s = 0.1 * sqrt(2)
    assert arm["ci95"] == pytest.approx(12.706204736 * 0.1, rel=1e-6)
    assert result["cost_dispersion_spearman"] > 0.8
    gap = result["highest_minus_lowest"]  # seed by seed: 0.5 - 0.1 and 0.7 - 0.3
    assert gap["mean"] == pytest.approx(0.4) and gap["ci95"] == 0.0 and gap["verdict"] == "higher"


# -- figures -------------------------------------------------------------------------------------------------


def _png(path: str) -> np.ndarray:
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 150 and image.shape[1] >= 150
    assert np.ptp(image[..., :3]) > 50  # something was drawn, not a blank canvas
    return image


def test_space_figures_are_readable_images(tmp_path):
    width, height, steps = 3, 2, 4
    rng = np.random.default_rng(0)
    layers = {"population": rng.integers(0, 5, (steps, 6)).astype(float), "price": rng.uniform(0.2, 0.8, (steps, 6)),
              "wealth": rng.uniform(0, 3, (steps, 6)), "controller": rng.integers(-1, 4, (steps, 6))}
    layers["price"][0, 2] = np.nan
    paths = {
        "maps": space_plots.region_maps(layers, [1, 5, 9, 13], width, height, "price of berries"),
        "dispersion": space_plots.dispersion_over_time(rng.uniform(0, 1, 50)),
        "cost": space_plots.dispersion_against_cost([0.0, 0.2, 1.0], {"mean": [0.3, 0.2, None], "ci95": [0.1, None, 0]},
                                                    {"mean": [0.1, 0.2, 0.4], "ci95": [0.05, 0.05, 0.05]}),
        "control": space_plots.control_over_time(rng.integers(0, 3, 30), rng.uniform(0.3, 1, 30)),
        "flows": space_plots.migration_flows(rng.integers(0, 9, (6, 6)), rng.normal(size=6), width, height,
                                             rng.integers(0, 4, 20)),
    }
    for name, figure in paths.items():
        save_figure(figure, tmp_path / f"{name}.png")
        _png(str(tmp_path / f"{name}.png"))
    assert iio.imread(tmp_path / "maps.png").shape[0] > iio.imread(tmp_path / "dispersion.png").shape[0]


def test_region_maps_refuse_layers_of_the_wrong_shape():
    layers = {name: np.zeros((2, 5)) for name in space_plots.MAP_LAYERS}
    with pytest.raises(ValueError, match="population"):
        space_plots.region_maps(layers, [1, 2], 3, 2)


def test_draw_space_figures_writes_the_maps_gif_with_one_frame_per_map_step(tmp_path):
    from homoecon_env.diagnostics import report_figures

    trace = _spatial_trace(steps=5)
    written = report_figures.draw_space_figures(trace, 3, 2, ["berries", "meat"], str(tmp_path))
    frames = iio.imread(tmp_path / written["space_maps_gif"], index=None)
    assert frames.shape[0] == len(written["space_map_gif_steps"]) >= 2 and frames.shape[-1] in (3, 4)
    for key in ("space_maps", "space_dispersion", "space_control", "space_flows"):
        _png(os.path.join(tmp_path, written[key]))


def _spatial_trace(steps: int = 12, n: int = 8, regions: int = 6) -> dict:
    """A small hand-made spatial trace: agents wander, founders 0..n-1, one birth."""
    rng = np.random.default_rng(1)
    region = rng.integers(0, regions, (steps, n))
    ids = np.tile(np.arange(n), (steps, 1))
    ids[6:, 0] = n  # agent n (child of 1) replaces agent 0 at step 7
    agents = {a: {"parents": ()} for a in range(n)}
    agents[n] = {"parents": (1, 2)}
    prices = rng.uniform(0.2, 0.8, (steps, regions, 2))
    prices /= prices.sum(axis=2, keepdims=True)
    prices[:, 5] = np.nan  # region 5 never settled in the prices (maps show nan)
    return {"regions": region, "ids": ids, "agents": agents, "region_prices": prices,
            "region_wealth": rng.uniform(0, 3, (steps, regions)), "reward_rows": rng.uniform(0, 1, (steps, n)),
            "reward": rng.uniform(0, 1, steps)}


def test_summarise_space_on_a_hand_made_trace_matches_the_pieces():
    trace = _spatial_trace()
    s = space.summarise_space(trace, 6)
    assert all(key.startswith("space_") for key in s)
    dispersion = space.price_dispersion(trace["region_prices"], space.region_counts(trace["regions"], 6))
    assert s["space_dispersion_mean"] == pytest.approx(dispersion.mean())
    _, moves = space.migration_flows(trace["regions"], trace["ids"], 6)
    assert s["space_moves_per_step"] == pytest.approx(moves.mean())
    assert 0 < s["space_control_share_late"] <= 1


# -- training logs (homoecon_lab.recorder) -------------------------------------------------------------------


def _step_stats(config, **space_figures) -> dict:
    r, j = config.num_resources, config.num_jobs
    stats = {key: 0.0 for key in ("mean_reward", "gini", "trade_volume", "births", "deaths_age", "deaths_starvation",
                                  "mean_age", "mean_effort", "trade_iterations", "trade_init_iterations",
                                  "trade_converged", "trade_ir_violation", "trade_kkt_residual")}
    stats.update(prices=np.full(r, 1 / r), totals=np.ones(r), produced=np.ones(r), job_counts=np.ones(j))
    return {**stats, **space_figures}


def test_training_logs_space_figures_only_for_spatial_economies():
    from homoecon_env.config import EconomyConfig
    from homoecon_lab.recorder import Recorder

    flat = Recorder(EconomyConfig(num_agents=4))
    flat.add(_step_stats(flat.config), {})
    assert not any(tag.startswith("space/") for tag in flat._scalars(flat.__dict__))

    recorder = Recorder(EconomyConfig(num_agents=6, world_width=3, world_height=1))
    two_markets = np.array([[0.5, 0.5], [0.2, 0.8], [np.nan, np.nan]])
    recorder.add(_step_stats(recorder.config, movers=2, region_population=[3, 3, 0], region_traders=[3, 3, 0],
                             region_prices=two_markets, migration_lost=[0.25, 0.5]), {})
    one_market = np.array([[0.4, 0.6], [np.nan, np.nan], [np.nan, np.nan]])  # dispersion undefined
    recorder.add(_step_stats(recorder.config, movers=4, region_population=[6, 0, 0], region_traders=[6, 0, 0],
                             region_prices=one_market, migration_lost=[0.0, 0.0]), {})
    scalars = recorder._scalars(recorder.__dict__)
    assert scalars["space/movers"] == 3.0 and scalars["space/occupied_regions"] == 1.5
    assert scalars["space/migration_lost"] == pytest.approx(0.375)
    assert scalars["space/price_dispersion"] == pytest.approx(math.log(2) / 2)  # the one step where it is defined


# -- evaluate.py end to end ----------------------------------------------------------------------------------
MOVER_SOURCE = '''
"""Random actions and random moves: a learner for any spatial world, whatever learners are installed."""
import dataclasses

import torch

from agents.baselines import RandomLearner


class RandomMover(RandomLearner):
    def act(self, observation):
        actions = super().act(observation)
        return dataclasses.replace(actions, move=torch.randint(0, 5, (actions.job.shape[0],)))
'''


def test_a_report_without_space_has_no_space_section():
    assert space.report_section({"main": {"summary": {}}, "figures": {}, "meta": {}}) == []


def test_evaluate_on_the_spatial_scenario_writes_the_space_section_and_its_files(tmp_path, monkeypatch):
    import json
    import re

    import evaluate
    from homoecon_env.scenarios import SCENARIOS

    if "spatial" not in SCENARIOS:
        pytest.skip("the spatial scenario is not registered yet (homoecon_env.scenarios)")
    (tmp_path / "space_mover.py").write_text(MOVER_SOURCE)
    monkeypatch.chdir(tmp_path)
    evaluate.main(["--scenario", "spatial", "--learner", "space_mover:RandomMover", "--num-agents", "16",
                   "--steps", "8", "--seeds", "2", "--ablation-seeds", "0", "--frames", "2", "--workers", "1",
                   "--migration-costs", "0", "1", "--out", "out"])
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    section = report[report.index("## Space"):report.index("## Files")]
    for image in re.findall(r"\]\(([^)]+\.(?:png|gif))\)", section):
        frames = iio.imread(out / image, index=None)
        assert frames.size > 150 * 150 * 3, image
    summary = metrics["main"]["summary"]
    assert {"space_dispersion_late", "space_moves_per_step", "space_control_share_late",
            "space_control_reward_gap"} <= set(summary)
    assert summary["space_moves_per_step"]["mean"] > 0  # random moves: about 4 in 5 agents try to move
    sweep = metrics["space"]["sweep"]
    assert sweep["costs"] == [0.0, 1.0] and set(sweep["arms"]) == {"0.0", "1.0"}
    for cost in ("0", "1"):  # one table row per cost, its numbers from metrics.json
        arm = sweep["arms"][f"{float(cost)}"]
        assert re.search(rf"^\| {cost} \| .*\|$", section, re.M), cost
        assert all(len(arm[key]["per_seed"]) == 2 for key in arm)


@pytest.mark.parametrize("costs", [(2.0,), (-0.1,), (0.2, 0.2), (True,)])
def test_a_bad_migration_cost_sweep_is_refused_naming_the_flag(costs):
    from homoecon_lab.evaluation import Args, check_args

    with pytest.raises(ValueError, match="--migration-costs"):
        check_args(Args(migration_costs=costs))
