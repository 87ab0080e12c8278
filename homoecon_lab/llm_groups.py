"""Mixed populations in evaluate.py: the learner groups compared (docs/design.md section 12).

`GroupRecorder` keeps, every step of a rollout driven by a learner with ``group_of`` (agents.mixed),
each row's group (as it acted), reward, wealth after trade and job. `group_comparison` turns the
rollouts of several seeds into metrics.json's "groups": per group, its mean reward per agent-step,
mean wealth (holdings after trade, summed over goods) per agent-step, the share of its agent-steps on
each job and its share of the slots at the end, each as a mean with a 95% CI over seeds; and every
other group's paired difference (per seed) from the first group. `groups_section` renders it for
report.md.
"""
from __future__ import annotations

import numpy as np

from homoecon_env.diagnostics import analysis


class GroupRecorder:
    """Per-step, per-row arrays of a mixed rollout ([T, N])."""

    def __init__(self, names: list[str], steps: int, num_agents: int):
        self.names = list(names)
        self.group = np.zeros((steps, num_agents), dtype=np.int16)
        self.reward = np.zeros((steps, num_agents), dtype=np.float64)
        self.wealth = np.zeros((steps, num_agents), dtype=np.float64)
        self.job = np.zeros((steps, num_agents), dtype=np.int16)
        self.final_group = None

    def record(self, t: int, groups, out, actions) -> None:
        """Step t (1-based): ``groups`` [N] each row's group when it acted."""
        self.group[t - 1] = groups.numpy()
        self.reward[t - 1] = out.reward.numpy()
        self.wealth[t - 1] = out.trade.allocation.numpy().sum(axis=1)
        self.job[t - 1] = actions.job.numpy()

    def result(self, final_groups) -> dict:
        return {"names": self.names, "group": self.group, "reward": self.reward, "wealth": self.wealth,
                "job": self.job, "final_group": final_groups.numpy().copy()}


def seed_outcome(record: dict, num_jobs: int) -> dict:
    """{group name: {"reward", "wealth", "job_share" [J], "slot_share"}} of one rollout (None: no member)."""
    outcome = {}
    for g, name in enumerate(record["names"]):
        member = record["group"] == g  # [T, N]
        count = int(member.sum())
        if count == 0:
            outcome[name] = None
            continue
        jobs = np.bincount(record["job"][member].astype(np.int64), minlength=num_jobs) / count
        outcome[name] = {"reward": float(record["reward"][member].mean()),
                         "wealth": float(record["wealth"][member].mean()),
                         "job_share": jobs.tolist(),
                         "slot_share": float((record["final_group"] == g).mean())}
    return outcome


def group_comparison(records: list[dict], job_names: list[str]) -> dict:
    """metrics.json's "groups" from one record per seed (module docstring)."""
    names = records[0]["names"]
    outcomes = [seed_outcome(record, len(job_names)) for record in records]
    measures = ["reward", "wealth", "slot_share"] + [f"job_share/{job}" for job in job_names]

    def value(outcome, name, measure):
        if outcome[name] is None:
            return None
        if measure.startswith("job_share/"):
            return outcome[name]["job_share"][job_names.index(measure.split("/", 1)[1])]
        return outcome[name][measure]

    result = {"groups": names, "seeds": len(records), "arms": {}, "versus_first": {}}
    for name in names:
        result["arms"][name] = {}
        for measure in measures:
            values = [value(o, name, measure) for o in outcomes]
            defined = [v for v in values if v is not None]
            summary = analysis.interval(defined) if len(defined) >= 2 else {
                "mean": defined[0] if defined else None, "ci95": None}
            result["arms"][name][measure] = {**summary, "per_seed": values}
    first = names[0]
    for name in names[1:]:
        result["versus_first"][name] = {}
        for measure in ("reward", "wealth"):
            pairs = [(value(o, name, measure), value(o, first, measure)) for o in outcomes]
            differences = [a - b for a, b in pairs if a is not None and b is not None]
            result["versus_first"][name][measure] = (analysis.interval(differences) if len(differences) >= 2
                                                     else {"mean": differences[0] if differences else None,
                                                           "ci95": None})
    return result


def _cell(summary: dict, digits: int = 4) -> str:
    if summary["mean"] is None:
        return "n/a"
    interval = "" if summary["ci95"] is None else f" ± {summary['ci95']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}{interval}"


def groups_section(groups: dict, job_names: list[str]) -> str:
    """A Markdown section for report.md: one row per group, then the differences from the first group."""
    header = "| group | reward / agent-step | wealth / agent-step | slots at end | " + \
        " | ".join(f"on {job}" for job in job_names) + " |"
    lines = ["## Learner groups (mixed population)", "",
             f"Means with 95% confidence intervals over {groups['seeds']} seeds (agent-steps of each group's members).",
             "", header, "|" + "---|" * (4 + len(job_names))]
    for name in groups["groups"]:
        arm = groups["arms"][name]
        cells = [_cell(arm["reward"]), _cell(arm["wealth"]), _cell(arm["slot_share"], 3)]
        cells += [_cell(arm[f"job_share/{job}"], 3) for job in job_names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = groups["groups"][0]
    for name, difference in groups["versus_first"].items():
        lines.append("")
        lines.append(f"{name} - {first}: reward {_cell(difference['reward'])}, wealth {_cell(difference['wealth'])}"
                     " (paired by seed; an interval that excludes 0 is a difference)")
    return "\n".join(lines) + "\n"
