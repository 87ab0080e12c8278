"""benchmarks/private_return.py: how much of one more unit's market value its maker keeps, on cases
worked by hand."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.private_return import main, value_kept  # noqa: E402


def test_two_traders_of_complements_split_one_more_unit_evenly():
    """A holds one unit of good 0, B one of good 1, both weigh each good 1/2: the market gives each half of
    every good, so A's extra delta of good 0 is split in two. By hand: each gains
    0.5 log(1 + (1 + delta) / 2) - 0.5 log(1.5); A keeps half; neither IR floor binds."""
    delta = 0.01
    own, total, binding = value_kept(np.array([[1.0, 0.0], [0.0, 1.0]]), np.full((2, 2), 0.5),
                                     goods=np.array([0, 1]), delta=delta, makers=np.array([0]))
    each = 0.5 * math.log1p((1 + delta) / 2) - 0.5 * math.log(1.5)
    assert own[0] == pytest.approx(each, rel=1e-5)
    assert total[0] == pytest.approx(2 * each, rel=1e-5)
    assert binding == 0.0


def test_a_maker_who_wants_only_what_it_holds_keeps_all_it_adds():
    """Each agent weighs only the good it holds: no trade helps anyone, every IR floor binds, and an extra
    delta stays with its maker: gain log(2 + delta) - log(2), nobody else's utility moves."""
    delta = 0.1
    own, total, binding = value_kept(np.array([[1.0, 0.0], [0.0, 1.0]]), np.eye(2), goods=np.array([0, 1]),
                                     delta=delta)
    expected = math.log(2 + delta) - math.log(2)
    assert own == pytest.approx([expected, expected], rel=1e-6)
    assert total == pytest.approx(own, rel=1e-6)
    assert binding == 1.0


def test_the_plan_on_the_supply_chain_leaves_intermediate_makers_little(tmp_path):
    """Under `scripted_chain` the market spreads most of what a miller or smith adds: a short run writes
    one row per job plus "all", every share kept at most 1, and the intermediate jobs' under 1/2."""
    out = tmp_path / "rows.json"
    assert main(["--num-agents", "20", "--steps", "40", "--every", "20", "--out", str(out)]) == 0
    rows = {row["job"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"farming", "forestry", "mining", "milling", "smithing", "baking", "carpentry", "all"}
    measured = [row["share_kept"] for row in rows.values() if not math.isnan(row["share_kept"])]
    assert all(share <= 1 + 1e-9 for share in measured)
    assert rows["milling"]["share_kept"] < 0.5 and rows["smithing"]["share_kept"] < 0.5
    assert 0.0 <= rows["all"]["ir_binding_share"] <= 1.0


@pytest.mark.parametrize("argv", [["--every", "0"], ["--delta", "-1"]])
def test_bad_options_are_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert argv[0] in capsys.readouterr().err
