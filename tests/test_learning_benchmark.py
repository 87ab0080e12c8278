"""benchmarks/learning.py: frozen scores of a trained run, and the summary's shares of the heuristic's gain."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.learning import frozen_score, summarise  # noqa: E402


def test_summary_gives_each_score_its_share_of_the_heuristics_gain_over_random():
    """Hand-worked: scripted 0.3 / 0.4 frozen, random 0.1 / 0.2, ppo 0.2 and 0.3 (mean 0.25) / 0.35."""
    runs = [{"learner": "scripted", "score": 0.3, "frozen": 0.4, "frozen_deterministic": 0.4, "seconds": 1.0},
            {"learner": "random", "score": 0.1, "frozen": 0.2, "frozen_deterministic": 0.2, "seconds": 1.0},
            {"learner": "ppo", "score": 0.2, "frozen": 0.35, "frozen_deterministic": 0.3, "seconds": 1.0},
            {"learner": "ppo", "score": 0.3, "frozen": 0.35, "frozen_deterministic": 0.4, "seconds": 1.0}]
    ppo = summarise(runs)["ppo"]
    assert ppo["mean"] == pytest.approx(0.25) and ppo["share_of_scripted_gain"] == pytest.approx(0.75)
    assert ppo["frozen_mean"] == pytest.approx(0.35) and ppo["frozen_share_of_scripted_gain"] == pytest.approx(0.75)
    assert ppo["frozen_deterministic_share_of_scripted_gain"] == pytest.approx(0.75)
    assert ppo["frozen_deterministic_scores"] == [0.3, 0.4]


def test_frozen_scores_repeat_and_a_deterministic_learner_scores_the_same_both_ways(tmp_path):
    runs = {}
    for learner in ("scripted", "ppo"):
        runs[learner] = tmp_path / learner
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--learner", learner, "--steps", "12", "--num-agents",
                        "6", "--dashboard-every", "0", "--run-dir", str(runs[learner])], check=True, cwd=ROOT,
                       capture_output=True)
    scripted = [frozen_score(str(runs["scripted"]), mode, 20, 2) for mode in (False, True)]
    assert scripted[0] == scripted[1] > 0
    ppo = [frozen_score(str(runs["ppo"]), mode, 20, 2) for mode in (False, True, True)]
    assert ppo[1] == ppo[2] and ppo[0] != ppo[1]
