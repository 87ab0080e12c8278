"""report.md's inheritance and dialect sections (docs/design.md section 9), from metrics.json's
"inheritance" entry (homoecon_lab.evaluation_sections.inheritance_results). Pure text, like :mod:`report`:
every number printed is read from the dict."""
from __future__ import annotations

from homoecon_env.diagnostics.analysis import MEASURES
from homoecon_env.diagnostics.report import MEASURE_LABELS, number, with_ci

MODES = ("genetic", "cultural", "none")
MODE_TEXT = {"genetic": "crossover + mutation of the two parents' networks",
             "cultural": "an exact copy of a living teacher's networks, the teacher drawn in proportion to wealth",
             "none": "fresh networks"}


def _verdicts(versus: dict) -> str:
    parts = [f"{MEASURE_LABELS[m]} is {versus[mode]['verdict'][m]} under {mode} inheritance"
             for mode in MODES[1:] for m in MEASURES if versus[mode]["verdict"][m] != "no significant difference"]
    if not parts:
        return ("No outcome differs significantly from genetic inheritance under either alternative: every paired "
                "difference's confidence interval contains zero.")
    return "Significant differences from genetic inheritance: " + "; ".join(parts) + "; the rest do not differ."


def inheritance_section(m: dict) -> list[str]:
    """Markdown lines: the inheritance ablation table, then lineages and message dialects; [] for metrics
    written before inheritance modes existed."""
    inheritance = m.get("inheritance")
    if not inheritance:
        return []
    meta, ci = m["meta"], m["meta"]["ci_percent"]
    lines = ["## Does inheritance matter? Genetic, cultural or no inheritance", ""]
    ablation = inheritance["ablation"]
    if not ablation:
        lines += ["The inheritance ablation was skipped (`--ablation-seeds 0`, or `--ablations` without "
                  "`inheritance`).", ""]
    else:
        lines += [f"A newborn's networks are: genetic, {MODE_TEXT['genetic']}; cultural, {MODE_TEXT['cultural']}; "
                  f"none, {MODE_TEXT['none']} (`--inheritance`). Each arm trains the `{ablation['learner']}` learner "
                  f"from fresh networks for {number(meta['ablation_train_steps'])} steps, then is evaluated frozen "
                  f"for {number(meta['ablation_steps'])} steps on the held-out seeds of the other ablations "
                  f"({number(meta['ablation_seeds'])} paired seeds; means ± {number(ci)}% CI; differences paired "
                  "by seed).", "",
                  "| measure | genetic | cultural | none | cultural − genetic | none − genetic |",
                  "|---|---|---|---|---|---|"]
        arms, versus = ablation["arms"], ablation["versus_genetic"]
        for measure in MEASURES:
            lines.append(f"| {MEASURE_LABELS[measure]} | "
                         + " | ".join(with_ci(arms[mode][measure]) for mode in MODES) + " | "
                         + " | ".join(with_ci(versus[mode]["difference"][measure]) for mode in MODES[1:]) + " |")
        lines += ["", _verdicts(versus), ""]
        dialects = ablation.get("dialects")
        if dialects:
            lines += ["Lineages and dialects in each arm's frozen rollouts (founder lineages and families, see below; "
                      "excess = RMS distance between groups' mean messages minus its shuffled-label baseline):", "",
                      "| | genetic | cultural | none |", "|---|---|---|---|"]
            for key, label in (("dialect_excess_mean", "dialect excess over shuffled, founder lineages"),
                               ("dialect_observed_mean", "distance between founder lineages' mean messages"),
                               ("dialect_shuffled_mean", "its shuffled-lineage baseline"),
                               ("family_dialect_excess_mean", "dialect excess over shuffled, families"),
                               ("family_dialect_observed_mean", "distance between families' mean messages"),
                               ("family_dialect_shuffled_mean", "its shuffled-family baseline"),
                               ("lineages_alive_end", "founder lineages alive at the end")):
                lines.append(f"| {label} | " + " | ".join(with_ci(dialects[mode][key]) for mode in MODES) + " |")
            lines.append("")
    s = inheritance["lineage"]["summary"]
    lines += ["## Lineages over time and message dialects", "",
              "A founder lineage follows first parents (the first of the two parents the economy drew), so every "
              "agent belongs to exactly one. Over the main rollouts, "
              f"{with_ci(s['lineages_alive_end'])} founder lineages were alive at the end and the largest held "
              f"{with_ci(s['largest_lineage_share_end'])} of the population.", "",
              "![lineage shares](lineage_shares.png)", "",
              "Dialects: the root-mean-square distance between the mean messages of every two lineages with two "
              "or more living speakers, against the same statistic with the lineage labels shuffled (same group "
              "sizes). In the "
              f"late window it was {with_ci(s['dialect_observed_late'])} by lineage against "
              f"{with_ci(s['dialect_shuffled_late'])} shuffled: an excess of {with_ci(s['dialect_excess_late'])} "
              + ("(lineages speak distinguishable dialects)." if _positive(s["dialect_excess_late"]) else
                 "(no evidence that lineages speak distinguishable dialects)."),
              "Once one founder lineage has taken over there is nothing to compare, so the same measure is also "
              "taken over families (agents sharing their first-parent grandparent): late "
              f"{with_ci(s['family_dialect_observed_late'])} against {with_ci(s['family_dialect_shuffled_late'])} "
              f"shuffled, an excess of {with_ci(s['family_dialect_excess_late'])} "
              + ("(families speak distinguishable dialects)." if _positive(s["family_dialect_excess_late"]) else
                 "(no evidence that families speak distinguishable dialects)."), "",
              "![dialects](dialects.png)", "",
              "The lineage DAG (parent -> child edges; teacher -> pupil edges under cultural inheritance) is in "
              "[genealogy.graphml](genealogy.graphml), readable with `networkx.read_graphml`.", ""]
    return lines


def _positive(stat: dict) -> bool:
    """An excess whose 95% CI over seeds lies above zero (one seed has no CI: never)."""
    return stat["mean"] is not None and stat["ci95"] is not None and stat["mean"] > stat["ci95"]
