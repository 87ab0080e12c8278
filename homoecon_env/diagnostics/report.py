"""report.md from the metrics dict that metrics.json holds (evaluate.py; docs/design.md section 6).

Pure text: a metrics dict in (as built by evaluate.py from :mod:`analysis`), Markdown out. Every number
the report prints is read from that dict and printed by :func:`number`, so each one can be found in
metrics.json; no number is computed here. The report answers the research questions of docs/design.md
section 1 (attention over time, message dimensionality, inequality and specialization, learned vs
uniform social filtering, heterogeneous tastes), then the policy ablation, lineages and prices.
"""
from __future__ import annotations

import math

from homoecon_env.diagnostics import space, supply_chain
from homoecon_env.diagnostics.analysis import MEASURES

NEAR_UNIFORM_ENTROPY = 0.95  # normalised attention entropy above which the report calls attention near-uniform
MEASURE_LABELS = {"mean_reward": "mean reward (per agent per step)", "gini": "Gini of wealth",
                  "specialization": "specialization index", "trade_volume": "trade volume (units per step)"}


def number(value) -> str:
    """How report.md prints a number from metrics.json: ints as they are, floats to 3 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        raise ValueError(f"number: got a bool ({value}); report numbers must be ints or floats")
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def with_ci(stat: dict) -> str:
    """'mean ± half-width' of a {"mean", "ci95"} entry."""
    return number(stat["mean"]) if stat["ci95"] is None else f"{number(stat['mean'])} ± {number(stat['ci95'])}"


def change_word(stat: dict, up: str, down: str) -> str:
    """Describe a late-minus-early change: significant only when its CI excludes zero."""
    if stat["mean"] is None or stat["ci95"] is None or abs(stat["mean"]) <= stat["ci95"]:
        return "did not change significantly"
    return up if stat["mean"] > 0 else down


def ablation_table(result: dict, title_first: str, title_second: str) -> list[str]:
    """Markdown table: each measure's arms, their paired difference and the verdict."""
    first, second = result["first"], result["second"]
    lines = [f"| measure | {title_first} | {title_second} | {title_first} − {title_second} (paired) | verdict |",
             "|---|---|---|---|---|"]
    for measure in MEASURES:
        verdict = result["verdict"][measure]
        verdict = verdict if verdict == "no significant difference" else f"{title_first} {verdict}"
        lines.append(f"| {MEASURE_LABELS[measure]} | {with_ci(result['arms'][first][measure])} | "
                     f"{with_ci(result['arms'][second][measure])} | "
                     f"{with_ci(result['difference'][measure])} | {verdict} |")
    return lines


def ablation_sentence(result: dict, first: str, second: str) -> str:
    """One sentence saying where the arms differ, honestly including 'nowhere'."""
    better = [MEASURE_LABELS[m] for m in MEASURES if result["verdict"][m] != "no significant difference"]
    if not better:
        return (f"No outcome differs significantly between {first} and {second}: every paired difference's "
                "confidence interval contains zero.")
    parts = [f"{MEASURE_LABELS[m]} is {result['verdict'][m]} with {first}" for m in MEASURES
             if result["verdict"][m] != "no significant difference"]
    return "Significant differences: " + "; ".join(parts) + "; the other outcomes do not differ significantly."


def message_dimensions(meta: dict) -> str:
    """The first sentence of Q2: the messages' dimensions (symbolic: tokens, seen as their one-hots)."""
    if meta.get("broadcast_mode") == "symbolic":
        return (f"Messages are {number(meta['message_length'])} token(s) from a vocabulary of "
                f"{number(meta['vocab_size'])} symbols (`broadcast_mode=\"symbolic\"`), seen by peers as "
                f"{number(meta['broadcast_dim'])} one-hot dimensions, on which the spectrum below is computed. ")
    return f"Messages have {number(meta['broadcast_dim'])} dimensions. "


def communication_section(s: dict, symbolic: bool = False) -> list[str]:
    """The "Communication" subsection (late-window means of diagnostics.communication's metrics);
    empty for metrics written before they existed."""
    if "message_entropy_late" not in s:
        return []
    mean = lambda key: with_ci(s[key])  # noqa: E731
    entropy = ("Message entropy (each dimension cut into `MESSAGE_BINS` equal-width bins over the broadcast box; "
               f"distinct binned messages over speakers): {mean('message_entropy_late')} bits (at most "
               f"{mean('message_entropy_max')}, when every speaker's binned message differs). ")
    if symbolic:
        entropy = (f"Message entropy (distinct token sequences over speakers): {mean('message_entropy_late')} bits "
                   f"(at most {mean('message_entropy_max')}: log2 of the speakers, or L log2 V when fewer sequences "
                   "exist; distances between messages are Hamming distances, and the mutual information takes "
                   "each token position as a symbol). ")
    return ["### Communication", "",
            "Measured on the messages of sampled late steps (each step over all speakers, then averaged). "
            + entropy + "Topographic similarity "
            "(Spearman correlation over speaker pairs of the distance between their private states: log "
            "holdings, tastes, job; and between their messages): "
            f"{mean('topographic_similarity_late')}. Mutual information (binned plug-in, best message dimension) "
            f"with the speaker's job: {mean('mi_job_late')} bits against {mean('mi_job_shuffled_late')} for "
            f"messages shuffled across speakers (excess {mean('mi_job_excess_late')}); with its log wealth: "
            f"{mean('mi_wealth_late')} against {mean('mi_wealth_shuffled_late')} (excess "
            f"{mean('mi_wealth_excess_late')}). An excess whose interval contains zero means the message carries "
            "no detectable information about that feature. Listeners' causal influence (how far another agent's "
            "actions move, Euclidean over broadcast, one-hot job, effort, trade weights and consumption, when one "
            "speaker's message is zeroed in its peers' view; same random numbers both ways): "
            f"{mean('causal_influence_late')}.", ""]


SCOUT_ARM_LABELS = {"learned": "learned attention", "uniform": "uniform attention", "trained": "trained",
                    "listener": "scripted listener", "ignorer": "scripted ignorer"}


def scout_structure(structure: dict) -> list[str]:
    """Whether the private-signals structure is used (metrics.json's "positive_control", built from
    diagnostics.scouts): attention on scouts and non-scouts on the boom job, per arm."""
    ratio, boom = "attention_on_scouts", "listeners_on_boom"
    rows = [f"| main rollouts (late window) | {with_ci(structure['main'][ratio + '_late'])} | "
            f"{with_ci(structure['main'][boom + '_late'])} |"]
    rows += [f"| {SCOUT_ARM_LABELS.get(arm, arm)} (ablation, frozen) | {with_ci(values[ratio])} | "
             f"{with_ci(values[boom])} |" for arm, values in structure["arms"].items()]
    if "learned_minus_uniform" in structure:
        difference = structure["learned_minus_uniform"]
        rows.append(f"| learned − uniform (paired) | {with_ci(difference[ratio])} | {with_ci(difference[boom])} |")
    return ["Is the structure used? *Attention on scouts*: the attention non-scouts put on scout peers divided by "
            "the scouts' share of their live peers (1 = uniform; uniform attention gives 1 by construction; n/a "
            "without attention). *Non-scouts on the boom*: the share of live non-scouts working the job in boom "
            f"({number(structure['chance_on_boom'])} by chance). Means ± 95% CI over seeds.", "",
            "| arm | attention on scouts | non-scouts on the boom |", "|---|---|---|", *rows, ""]


def positive_control_section(ablations: dict, learner_config: dict, structure: dict | None = None) -> list[str]:
    """The "Positive control" subsection of Q4 (economies with private signals, docs/design.md section 11);
    empty elsewhere. ``structure``: metrics.json's "positive_control" (scout_structure), when present."""
    if "positive_control" not in ablations:
        return ["### Positive control", "", *scout_structure(structure)] if structure else []
    fixes = [f"`{name}`" for name in ("horizon_baseline", "inherit_optimizer", "attention_sink", "mean_context")
             if learner_config.get(name)]
    listed = " and ".join(fixes) if len(fixes) < 3 else ", ".join(fixes[:-1]) + " and " + fixes[-1]
    learners = (f"The learning arms above ran with {listed} (docs/design.md "
                "section 11), both arms alike." if fixes else "The learning arms above ran without the learning "
                "fixes of docs/design.md section 11.")
    return ["### Positive control", "",
            "In this economy a boom moves between jobs; scouts see it privately and everyone sees peers' last "
            "job. Two scripted policies that never learn, on the same held-out seeds: the listener (a non-scout "
            "works the job most scouts among its peers worked last step) and the best policy that ignores peers "
            "(scouts follow their own signal, the others work their tastes' favourite job). Listening must pay "
            f"here by construction; the learned social filter is measured against uniform attention above. {learners}",
            "",
            *ablation_table(ablations["positive_control"], "listener", "ignorer"), "",
            ablation_sentence(ablations["positive_control"], "the listener", "the ignorer"), "",
            *(scout_structure(structure) if structure else [])]


def render_report(m: dict) -> str:
    """report.md from the metrics dict alone (so every number in it is in metrics.json)."""
    meta, s, figures = m["meta"], m["main"]["summary"], m["figures"]
    goods, jobs = meta["resources"], meta["jobs"]
    ci = meta["ci_percent"]
    mean = lambda key: with_ci(s[key])  # noqa: E731
    lines = ["# HomoEcon evaluation report", ""]
    source = (f"the trained run `{meta['run']}` (learner `{meta['learner']}`)" if meta["run"]
              else f"untrained agents (freshly initialised `{meta['learner']}` learners)")
    mode = ("were frozen (no weight updates; newborns still inherit networks)" if not meta["learn"]
            else "kept learning" if meta.get("updates", 1)
            else "could have learned, but this learner never reported an update: it acts by fixed rules")
    lines += [
        f"Evaluated {source}: the `{meta.get('scenario', 'seed')}` scenario's economy of "
        f"{number(meta['num_agents'])} agents, {number(meta['seeds'])} rollouts "
        f"of {number(meta['steps'])} steps each, during which the learners {mode}. Figures show the first rollout; "
        f"numbers are means over the rollouts ± the half-width of a {number(ci)}% confidence interval "
        f"(Student t over seeds; n/a with a single seed). \"Early\" is the first {number(meta['early_steps'])} steps, "
        f"\"late\" the last {number(meta['early_steps'])}. The evaluation took {number(meta['wall_seconds'])} s.",
        "", "![dashboard](dashboard.png)", ""]

    # Q1: attention over time.
    lines += ["## Q1. How do attention patterns change over time?", "",
              "Attention entropy is normalised by the log of the number of live peers: uniform attention is the "
              "maximum, attention on a single peer the minimum. The favourite graph links every agent to the peer "
              "it attends to most; its weakly connected components are classified by Weisfeiler-Lehman hash.", ""]
    if s["attention_entropy_early"]["mean"] is None:
        lines += ["This learner has no attention (every peer counts the same), so there is nothing to track.", ""]
    else:
        lines += ["| | early | late |", "|---|---|---|"]
        rows = [("attention entropy (normalised)", "attention_entropy"),
                ("attention entropy (nats)", "attention_entropy_nats")]
        for label, key in rows:
            lines.append(f"| {label} | {mean(key + '_early')} | {mean(key + '_late')} |")
        for label, key in (("favourite-graph components", "components"), ("distinct component shapes", "shapes"),
                           ("largest in-degree", "max_in_degree"),
                           ("fraction of agents in mutual pairs", "mutual_fraction"),
                           ("largest PageRank", "pagerank_max"), ("mean clustering", "mean_clustering"),
                           ("Spearman correlation of in-degree with wealth", "in_degree_wealth_corr")):
            lines.append(f"| {label} | {mean(f'graph_{key}_early')} | {mean(f'graph_{key}_late')} |")
        entropy_trend = change_word(s["attention_entropy_change"], "rose, i.e. attention became more diffuse",
                                    "fell, i.e. attention became more focused")
        lines += ["", f"Between the early and late windows the attention entropy {entropy_trend} "
                  f"(change {mean('attention_entropy_change')}). "
                  + ("Attention stays close to uniform throughout: the late normalised entropy is above "
                     f"{number(meta['near_uniform_entropy'])}, so favourites are picked by small differences in "
                     "attention." if (s["attention_entropy_late"]["mean"] or 0.0) > meta["near_uniform_entropy"] else
                     "Attention is clearly non-uniform late."), "",
                  "![attention heatmap](attention_heatmap.png)", "",
                  "![favourite-graph shapes, early](topology_early.png)", "",
                  "![favourite-graph shapes, late](topology_late.png)", "",
                  "![in-degree and PageRank](degree_pagerank.png)", ""]

    # Q2: dimensionality of messages.
    lines += ["## Q2. Are broadcast vectors low-dimensional?", "",
              message_dimensions(meta) + "The participation ratio of their covariance "
              f"spectrum (the effective number of dimensions) was {mean('participation_ratio_early')} early and "
              f"{mean('participation_ratio_late')} late, i.e. a fraction {mean('participation_fraction_late')} of the "
              f"available dimensions late (change {mean('participation_ratio_change')}: "
              f"{change_word(s['participation_ratio_change'], 'more dimensions used', 'fewer dimensions used')}). "
              f"The first principal component carries a share {mean('pc1_share_early')} of the variance early and "
              f"{mean('pc1_share_late')} late; the first two together {mean('pc12_share_late')} late.", "",
              "![eigenvalue spectra over time](eigen_spectra.png)", "", "![broadcast PCA](broadcast_pca.png)", ""]
    lines += communication_section(s, meta.get("broadcast_mode") == "symbolic")

    # Q3: inequality and specialization.
    drivers = {k[len("wealth_corr_"):]: v for k, v in s.items() if k.startswith("wealth_corr_")}
    ranked = sorted((k for k in drivers if drivers[k]["mean"] is not None), key=lambda k: -abs(drivers[k]["mean"]))
    lines += ["## Q3. What drives inequality and specialization?", "",
              f"The Gini coefficient of wealth (holdings after trade) was {mean('gini_early')} early and "
              f"{mean('gini_late')} late ({change_word(s['gini_change'], 'inequality grew', 'inequality fell')}); "
              f"late, the richest fraction {number(meta['top_share'])} of agents held a share "
              f"{mean('top_share_late')} of all goods. Over time, the Gini coefficient's Spearman correlation with "
              f"the largest relative price (how scarce the scarcest good is) was {mean('gini_price_imbalance_corr')}: "
              "a positive value means inequality rises when the seasons make one good scarce, so early-vs-late "
              "comparisons mix learning with the season's phase.", "",
              "Spearman correlation of an agent's wealth with its traits, over agents, averaged over "
              f"{number(meta['snapshots'])} snapshots per rollout (the strongest first):", "",
              "| trait | correlation with wealth |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {with_ci(drivers[name])} |" for name in ranked]
    if ranked:
        lines += ["", f"The strongest association is with **{ranked[0].replace('_', ' ')}**."]
    lines += ["", f"Specialization index (each agent's consistency of job over its life, counted for agents seen "
              f"on at least {number(meta['min_life_steps'])} steps; higher = more specialized) was "
              f"{mean('specialization_early')} early and {mean('specialization_late')} late "
              f"({change_word(s['specialization_change'], 'rose', 'fell')}; change {mean('specialization_change')}); "
              f"division of labour (mutual information of agent and job, normalised) over the whole rollout "
              f"{mean('division_of_labour_all')}. Late job shares: "
              + ", ".join(f"{job} {mean(f'job_share_late_{job}')}" for job in jobs) + ".", "",
              "![Gini over time](gini.png)", "", "![job distribution](job_distribution.png)", "",
              "![effort vs consumption](effort_consumption.png)", "",
              "![ages and reproduction](ages_reproduction.png)", "",
              "The market, before and after each clearing (the seed's trade scatter; also animated in "
              "[trade.gif](trade.gif)): "
              + ", ".join(f"[step {number(t)}]({path})"
                          for t, path in zip(figures["trade_scatter_steps"], figures["trade_scatter"]))
              + ".", "", f"![trade scatter]({figures['trade_scatter'][-1]})", ""]

    # Q4, Q5 and the policy ablation.
    ablations = m["ablations"]
    protocol = (f"Protocol: {number(meta['ablation_seeds'])} paired seeds. Per seed, each arm starts from fresh "
                f"networks, trains for {number(meta['ablation_train_steps'])} steps, then is evaluated frozen for "
                f"{number(meta['ablation_steps'])} steps on a held-out economy seed shared by all arms. "
                f"Entries are means ± {number(ci)}% CI over seeds; differences are paired by seed.")
    if not ablations:
        lines += ["## Q4. Does learned social filtering beat uniform interaction?", "",
                  "Ablations were skipped (`--ablation-seeds 0`).", "",
                  *positive_control_section({}, {}, m.get("positive_control"))]
    else:
        not_run = "Not run: `--ablations` did not choose it."
        lines += ["## Q4. Does learned social filtering beat uniform interaction?", "", protocol, ""]
        lines += [*ablation_table(ablations["social_filter"], "learned", "uniform"), "",
                  ablation_sentence(ablations["social_filter"], "learned attention", "uniform attention"), ""] \
            if "social_filter" in ablations else [not_run, ""]
        lines += [*positive_control_section(ablations, m.get("learner_config") or {}, m.get("positive_control")),
                  "## Q5. What does heterogeneity of tastes do?", ""]
        lines += ["Both arms run REINFORCE with a learned social filter; homogeneous tastes give every agent equal "
                  "utility weights on all goods (`heterogeneous_tastes=False`).", "",
                  *ablation_table(ablations["tastes"], "heterogeneous", "homogeneous"), "",
                  ablation_sentence(ablations["tastes"], "heterogeneous tastes", "homogeneous tastes"), ""] \
            if "tastes" in ablations else [not_run, ""]
        lines += ["## Trained vs random policy", ""]
        lines += [("The trained arm is the run's learner, frozen, evaluated on the same held-out seeds (no further "
                   "training)." if meta["run"] else
                   f"Without `--run`, the trained arm is the `{meta['learner']}` learner after the same short "
                   "training."),
                  "", *ablation_table(ablations["policy"], "trained", "random"), "",
                  ablation_sentence(ablations["policy"], "the trained policy", "random actions"), ""] \
            if "policy" in ablations else [not_run, ""]

    # Lineages.
    g = m["genealogy"]
    lines += ["## Lineages", "",
              f"In the first rollout {number(g['agents'])} agents lived: "
              f"{number(g['initial_population'])} founders and {number(g['births'])} births "
              f"({number(g['founder_births'])} of them refounding after a collapse). "
              f"{number(g['deaths_age'])} died of age and {number(g['deaths_starvation'])} of starvation. The deepest "
              f"lineage reached generation {number(g['lineage_depth'])}; the living end at mean generation "
              f"{number(g['mean_generation_alive'])}, and "
              f"{number(g['founder_lineages_surviving'])} of the {number(g['initial_population'])} founders have "
              "living descendants. Every agent, its parents, birth and death are in "
              "[genealogy.csv](genealogy.csv).", ""]
    if g["most_prolific"]:
        lines += ["Most prolific ancestors:", "",
                  "| agent | generation | born at step | children | descendants | living descendants |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| `{r['agent']}` | {number(r['generation'])} | {number(r['birth_step'])} | "
                  f"{number(r['children'])} | "
                  f"{number(r['descendants'] if r['descendants'] != '' else None)} | "
                  f"{number(r['living_descendants'] if r['living_descendants'] != '' else None)} |"
                  for r in g["most_prolific"]]
        lines.append("")

    from homoecon_env.diagnostics import report_inheritance  # pure text too; imported here: it imports this module
    lines += report_inheritance.inheritance_section(m)

    # Prices and scarcity.
    lines += ["## Do relative prices follow scarcity across seasons?", "",
              "Relative scarcity of a good is the inverse of its total stock, normalised over goods. The Spearman "
              f"correlation of relative price with relative scarcity over time was {mean('price_scarcity_spearman')} "
              f"(all goods pooled: {mean('price_scarcity_pooled')}).", "",
              "| good | relative price in its season | out of season |", "|---|---|---|"]
    lines += [f"| {good} | {mean(f'price_in_season_{good}')} | {mean(f'price_out_of_season_{good}')} |"
              for good in goods if f"price_in_season_{good}" in s]
    lines += ["", "A good is in season when the job producing it is at least halfway to its seasonal peak.", "",
              "![resources and prices](resources_prices.png)", ""]
    lines += supply_chain.report_section(m)  # only for economies whose jobs use inputs
    lines += space.report_section(m)  # only for spatial economies (docs/design.md section 13)
    lines += ["## Files", "",
              "`metrics.json` (every number above), `genealogy.csv`, `dashboard.png`, `gini.png`, `trade.gif`, "
              "`trade_scatter/`, and one PNG per figure above.", ""]
    return "\n".join(lines)
