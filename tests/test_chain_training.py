"""benchmarks/chain_training.py: train.py on supply_chain, as it stands and from scratch, read back."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.chain_training import final_good_names, main  # noqa: E402


def test_the_apprentices_warm_start_makes_final_goods_where_learners_from_scratch_make_none(tmp_path):
    """In train.py's warm start the plan drives the economy, so final goods are made from the first steps; the
    same command with --reference none starts from random policies, which hold no inputs and make almost none.
    The runs' own config.json says which learner settings train.py chose."""
    out, png = tmp_path / "runs.jsonl", tmp_path / "curve.png"
    assert main(["--seeds", "0", "--steps", "40", "--log-every", "10", "--out", str(out), "--plot", str(png)]) == 0
    rows = {row["arm"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"apprentice", "from scratch"}
    assert (rows["apprentice"]["reference"], rows["apprentice"]["reference_steps"]) == ("scripted_chain", 4000)
    assert (rows["from scratch"]["reference"], rows["from scratch"]["reference_steps"]) == ("none", 0)
    for row in rows.values():
        assert row["steps"] == [10, 20, 30, 40] and len(row["final_made"]) == len(row["reward"]) == 4
    apprentice, scratch = (sum(rows[arm]["final_made"]) / 4 for arm in ("apprentice", "from scratch"))
    assert apprentice > 2.0 and scratch < 0.2 * apprentice, (apprentice, scratch)
    assert final_good_names() == ["bread", "furniture"]
    assert png.stat().st_size > 10_000
