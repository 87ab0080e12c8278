"""evaluate.py on a mixed population: the learner groups compared with CIs (homoecon_lab.llm_groups)."""
import json

import numpy as np
import pytest

from homoecon_lab.llm_groups import group_comparison, seed_outcome


def _record(group, reward, wealth, job, final):
    return {"names": ["llm", "reinforce"], "group": np.array(group), "reward": np.array(reward, dtype=float),
            "wealth": np.array(wealth, dtype=float), "job": np.array(job), "final_group": np.array(final)}


def test_a_groups_outcome_is_the_mean_over_its_members_agent_steps():
    # 2 steps x 3 rows; row 2 moves from llm to reinforce at step 2 (a newborn of a reinforce parent)
    record = _record(group=[[0, 1, 0], [0, 1, 1]], reward=[[1, 2, 3], [5, 4, 6]], wealth=[[10, 0, 2], [4, 8, 8]],
                     job=[[0, 1, 1], [0, 0, 1]], final=[0, 1, 1])
    outcome = seed_outcome(record, num_jobs=2)
    assert outcome["llm"]["reward"] == pytest.approx((1 + 3 + 5) / 3)
    assert outcome["llm"]["wealth"] == pytest.approx((10 + 2 + 4) / 3)
    assert outcome["llm"]["job_share"] == pytest.approx([2 / 3, 1 / 3])
    assert outcome["reinforce"]["reward"] == pytest.approx((2 + 4 + 6) / 3)
    assert outcome["reinforce"]["job_share"] == pytest.approx([1 / 3, 2 / 3])
    assert outcome["llm"]["slot_share"] == pytest.approx(1 / 3) and outcome["reinforce"]["slot_share"] == 2 / 3


def test_groups_compare_with_a_paired_difference_over_seeds():
    records = [_record([[0, 1]], [[r, r + d]], [[1, 1]], [[0, 1]], [0, 1]) for r, d in ((1.0, 0.5), (2.0, 0.7),
                                                                                     (0.0, 0.6))]
    result = group_comparison(records, ["gathering", "hunting"])
    difference = result["versus_first"]["reinforce"]["reward"]
    assert difference["mean"] == pytest.approx(0.6)  # the paired differences 0.5, 0.7, 0.6
    t_975_2 = 4.302652729911275  # Student's t quantile 0.975 with 2 degrees of freedom; sd of (0.5, 0.7, 0.6) = 0.1
    assert difference["ci95"] == pytest.approx(t_975_2 * 0.1 / np.sqrt(3), rel=1e-6)
    assert result["arms"]["llm"]["reward"]["per_seed"] == [1.0, 2.0, 0.0]
    assert result["arms"]["llm"]["job_share/gathering"]["mean"] == 1.0


def test_evaluate_reports_the_groups_of_a_mixed_run(tmp_path):
    from homoecon_lab.cli import parse_train_args
    from homoecon_lab.evaluation import Args, evaluate
    from homoecon_lab.training import train

    run = tmp_path / "run"
    train(parse_train_args(["--learner", "mixed", "--mix", "scripted=0.5,reinforce=0.5", "--num-agents", "6",
                            "--steps", "4", "--run-dir", str(run), "--dashboard-every", "0"]))
    result = evaluate(Args(run=str(run), out=str(tmp_path / "out"), steps=12, seeds=2, frames=2, ablation_seeds=0,
                           workers=1))
    groups = result["groups"]
    assert groups["groups"] == ["scripted", "reinforce"] and groups["seeds"] == 2
    shares = [groups["arms"][name]["slot_share"]["per_seed"] for name in groups["groups"]]
    assert all(a + b == pytest.approx(1.0) for a, b in zip(*shares))  # every slot is in one group
    assert "## Learner groups (mixed population)" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["groups"] == groups
