"""homoecon_env.diagnostics.report: how report.md prints the numbers of metrics.json.

The whole report is checked against a real evaluation in test_evaluate.py."""
import pytest

from homoecon_env.diagnostics import report
from homoecon_env.diagnostics.analysis import MEASURES


@pytest.mark.parametrize("value, text", [
    (None, "n/a"), (3, "3"), (-12, "-12"), (0.123456, "0.123"), (1234.5, "1.23e+03"), (2.0, "2"),
    (float("nan"), "n/a"), (float("inf"), "n/a"),
])
def test_number_prints_ints_as_they_are_and_floats_to_three_digits(value, text):
    assert report.number(value) == text


def test_number_refuses_a_bool():
    with pytest.raises(ValueError, match="got a bool"):
        report.number(True)


def test_with_ci_and_change_word():
    assert report.with_ci({"mean": 0.5, "ci95": None}) == "0.5"
    assert report.with_ci({"mean": 0.5, "ci95": 0.25}) == "0.5 ± 0.25"
    assert report.change_word({"mean": 0.3, "ci95": 0.1}, "up", "down") == "up"
    assert report.change_word({"mean": -0.3, "ci95": 0.1}, "up", "down") == "down"
    for unclear in ({"mean": 0.1, "ci95": 0.1}, {"mean": 0.3, "ci95": None}, {"mean": None, "ci95": None}):
        assert report.change_word(unclear, "up", "down") == "did not change significantly"


def ablation(verdicts):
    stat = {"mean": 1.0, "ci95": 0.5}
    return {"first": "a", "second": "b",
            "arms": {"a": dict.fromkeys(MEASURES, stat), "b": dict.fromkeys(MEASURES, stat)},
            "difference": dict.fromkeys(MEASURES, stat), "verdict": verdicts}


def test_ablation_table_has_a_row_per_measure_with_its_verdict():
    verdicts = dict.fromkeys(MEASURES, "no significant difference") | {"gini": "lower"}
    lines = report.ablation_table(ablation(verdicts), "learned", "uniform")
    assert len(lines) == 2 + len(MEASURES)
    assert lines[0].startswith("| measure | learned | uniform | learned − uniform (paired)")
    gini = next(line for line in lines if line.startswith("| Gini of wealth"))
    assert gini == "| Gini of wealth | 1 ± 0.5 | 1 ± 0.5 | 1 ± 0.5 | learned lower |"


def test_ablation_sentence_says_where_arms_differ_including_nowhere():
    none = report.ablation_sentence(ablation(dict.fromkeys(MEASURES, "no significant difference")), "x", "y")
    assert none.startswith("No outcome differs significantly between x and y")
    some = report.ablation_sentence(ablation(dict.fromkeys(MEASURES, "no significant difference")
                                             | {"mean_reward": "higher"}), "x", "y")
    assert some == ("Significant differences: mean reward (per agent per step) is higher with x; "
                    "the other outcomes do not differ significantly.")
