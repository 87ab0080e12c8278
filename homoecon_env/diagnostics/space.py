"""Space (docs/design.md section 13): regional maps, territory control, the law of one price, migration flows.

Pure functions, arrays in and numbers out, like the rest of diagnostics (a leaf: no torch, env or agents).
Shapes: T steps, N agent rows, G regions of a W x H grid (region g = y * W + x), R goods.

Definitions used in metrics.json (keys ``space_*``) and report.md's "Space" section:

- Population, mean wealth, prices per region (`region_counts`, `region_means`): over the live rows of
  each region; a region nobody lives in has population 0 and nan means (its prices are nan too).
- Price dispersion (`price_dispersion`), the law of one price: at one step, for each good, the
  standard deviation (ddof 0) across regions of the log of the region's relative price (each region's
  prices sum to 1), then the mean over goods. Only real markets count: regions with at least
  MIN_MARKET agents and a positive price for the good (a zero price means nobody there holds it: not a
  price). 0 when every such region has the same prices; nan with fewer than two of them. For small
  differences it is the coefficient of variation of the prices. How fast it falls (`dispersion_trend`):
  the least-squares slope of log(dispersion) against the step, per 100 steps (negative: prices
  converge; -0.69 halves the dispersion every 100 steps).
- Control (`controllers`): the lineage controlling a region is the founder lineage
  (diagnostics.lineage.founder_lineages, the first-parent line) with the most live members there.
  Ties: the incumbent (the region's controller at the step before) keeps control when it is among
  the tied lineages, so a challenger must overtake it, not merely equal it; otherwise the tied lineage
  with the smallest founder id (the oldest) controls. An empty region has no controller (-1).
  A change of control (`control_changes`) is a step at which an occupied region's controller differs
  from its controller at the step before, when it was also occupied (emptying and resettling are not
  counted). Control's economic effect (`control_reward_gap`): per region and step where both groups
  are present, the mean reward of the controlling lineage's members minus that of the other members
  of the region.
- Migration flows (`migration_flows`): an agent moved when the same agent sits in the same row at two
  consecutive recorded steps in different regions. Rows change hands at a death (the newborn appears
  in its parent's region), so a move is only counted for an agent seen on both steps; moves on the
  step an agent dies are not seen.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from homoecon_env.diagnostics.arrays import finite_float_array, float_array, int_array, to_numpy

NO_CONTROLLER = -1  # controller of an empty region
MIN_MARKET = 2  # agents a region needs for its prices to count in the dispersion (a lone agent has no market)
TREND_STEPS = 100  # dispersion_trend's slope is per this many steps
SWEEP_COSTS = (0.0, 0.05, 0.2, 1.0)  # evaluate.py's migration-cost sweep on spatial economies (homoecon_lab.evaluation)

__all__ = ["MIN_MARKET", "NO_CONTROLLER", "SWEEP_COSTS", "TREND_STEPS", "SpaceRecorder", "control_changes",
           "control_reward_gap", "controllers", "dispersion_outcome", "dispersion_trend", "lineage_rows",
           "migration_flows", "net_inflow", "price_dispersion", "region_counts", "region_means", "region_xy",
           "report_section", "summarise_space", "sweep_results"]


def _alive(alive: Any, shape: tuple[int, ...]) -> np.ndarray:
    if alive is None:
        return np.ones(shape, dtype=bool)
    mask = to_numpy(alive).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"alive: expected shape {shape} like region, got {mask.shape}")
    return mask


def region_xy(region: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Column x and row y of each region index (g = y * W + x)."""
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width: expected an int >= 1, got {width!r}")
    g = np.asarray(region, dtype=np.int64)
    return g % width, g // width


def region_counts(region: Any, num_regions: int, alive: Any = None) -> np.ndarray:
    """[..., G] live rows per region; ``region`` [..., N] (one step, or [T, N] for every step)."""
    g = int_array(region, "region", 0, num_regions)
    mask = _alive(alive, g.shape)
    lead = g.shape[:-1]
    flat = g.reshape(-1, g.shape[-1])
    offset = (np.arange(flat.shape[0]) * num_regions)[:, None]
    counts = np.bincount((flat + offset)[mask.reshape(flat.shape)], minlength=flat.shape[0] * num_regions)
    return counts.reshape(*lead, num_regions)


def region_means(region: Any, values: Any, num_regions: int, alive: Any = None) -> np.ndarray:
    """[..., G] mean of ``values`` [..., N] over each region's live rows; nan for an empty region."""
    g = int_array(region, "region", 0, num_regions)
    x = float_array(values, "values", g.ndim)
    if x.shape != g.shape:
        raise ValueError(f"values: expected shape {g.shape} like region, got {x.shape}")
    mask = _alive(alive, g.shape)
    flat, xs = g.reshape(-1, g.shape[-1]), x.reshape(-1, g.shape[-1])
    keys = (flat + (np.arange(flat.shape[0]) * num_regions)[:, None])[mask.reshape(flat.shape)]
    size = flat.shape[0] * num_regions
    sums = np.bincount(keys, xs[mask.reshape(flat.shape)], minlength=size)
    counts = np.bincount(keys, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means.reshape(*g.shape[:-1], num_regions)


def price_dispersion(region_prices: Any, population: Any = None) -> np.ndarray:
    """[...] the law of one price's gap: the std (ddof 0) across regions of log relative price, per good, then
    the mean over goods. ``region_prices`` [..., G, R] (one step, or [T, G, R]); ``population`` [..., G]
    (optional) live agents per region. Only real markets count: a region with a nan price (nobody there),
    fewer than MIN_MARKET agents (a lone agent's "prices" are arbitrary), or a zero price for a good (nobody
    there holds it: its price is not identified) is left out for that good. nan where fewer than two
    regions count for every good. ValueError on a negative price."""
    prices = float_array(region_prices, "region_prices", (2, 3))
    if (prices < 0).any():
        raise ValueError("region_prices: a price is negative; expected relative prices >= 0 (nan: no market)")
    valid = np.isfinite(prices) & (prices > 0)  # [..., G, R]
    if population is not None:
        people = float_array(population, "population", prices.ndim - 1)
        if people.shape != prices.shape[:-1]:
            raise ValueError(f"population: expected shape {prices.shape[:-1]} like region_prices' regions, got "
                             f"{people.shape}")
        valid &= (people >= MIN_MARKET)[..., None]
    logs = np.log(np.where(valid, prices, 1.0))
    count = valid.sum(axis=-2)  # [..., R]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, logs, 0.0).sum(axis=-2) / count  # [..., R]
        variance = (np.where(valid, logs - mean[..., None, :], 0.0) ** 2).sum(axis=-2) / count
    spread = np.where(count >= 2, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    defined = np.isfinite(spread)
    total = np.where(defined, spread, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined.any(axis=-1), total / defined.sum(axis=-1), np.nan)


def dispersion_trend(dispersion: Any, steps: Any = None) -> Optional[float]:
    """Least-squares slope of log(dispersion) against the step, per TREND_STEPS steps, over the steps where
    the dispersion is finite and positive (None with fewer than two such steps). ``steps`` default 1..T."""
    d = float_array(dispersion, "dispersion", 1)
    t = np.arange(1, len(d) + 1, dtype=np.float64) if steps is None else finite_float_array(steps, "steps", 1)
    if t.shape != d.shape:
        raise ValueError(f"steps: expected {len(d)} entries like dispersion, got {len(t)}")
    keep = np.isfinite(d) & (d > 0)
    if keep.sum() < 2 or np.ptp(t[keep]) == 0:
        return None
    slope = np.polyfit(t[keep], np.log(d[keep]), 1)[0]
    return float(slope * TREND_STEPS)


def lineage_rows(ids: Any, agents: Mapping[int, Mapping]) -> np.ndarray:
    """[T, N] founder lineage (diagnostics.lineage.founder_lineages) of the agent in each row."""
    from homoecon_env.diagnostics.lineage import founder_lineages  # networkx: loaded only when needed

    ids = np.asarray(ids, dtype=np.int64)
    lineage = founder_lineages(agents)
    lookup = np.full(max(int(ids.max(initial=0)), max(lineage, default=0)) + 1, -1, dtype=np.int64)
    lookup[list(lineage)] = list(lineage.values())
    rows = lookup[ids]
    if (rows < 0).any():
        raise ValueError(f"ids: agent_{int(ids[rows < 0][0])} has no genealogy record")
    return rows


def controllers(region: Any, lineage: Any, num_regions: int, alive: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The lineage controlling each region at each step, and its share of the region's live members.

    ``region``, ``lineage`` [T, N] (the region and founder lineage of each row at each step; lineage ids
    are non-negative ints). Returns controller [T, G] (NO_CONTROLLER for an empty region) and share
    [T, G] (nan when empty). Ties: the incumbent keeps control, else the smallest lineage id (module doc).
    """
    g = int_array(region, "region", 0, num_regions)
    if g.ndim != 2:
        raise ValueError(f"region: expected a [T, N] array, got shape {g.shape}")
    lin = int_array(lineage, "lineage", 0, np.iinfo(np.int64).max)
    if lin.shape != g.shape:
        raise ValueError(f"lineage: expected shape {g.shape} like region, got {lin.shape}")
    mask = _alive(alive, g.shape)
    steps = g.shape[0]
    controller = np.full((steps, num_regions), NO_CONTROLLER, dtype=np.int64)
    share = np.full((steps, num_regions), np.nan)
    incumbent = np.full(num_regions, NO_CONTROLLER, dtype=np.int64)
    for t in range(steps):  # one pass per step; within a step, batched over rows and regions
        if not mask[t].any():
            incumbent = controller[t]
            continue
        keys, counts = np.unique(np.stack([g[t][mask[t]], lin[t][mask[t]]]), axis=1, return_counts=True)
        regions, lineages = keys  # pairs (region, lineage) present, with their member counts
        top = np.zeros(num_regions, dtype=np.int64)
        np.maximum.at(top, regions, counts)
        tied = counts == top[regions]
        # among the tied: the incumbent scores -1 (wins), the others their lineage id (the smallest wins)
        score = np.where(lineages == incumbent[regions], -1, lineages)[tied]
        best = np.full(num_regions, np.iinfo(np.int64).max)
        np.minimum.at(best, regions[tied], score)
        occupied = top > 0
        chosen = np.where(best == -1, incumbent, best)
        controller[t] = np.where(occupied, chosen, NO_CONTROLLER)
        population = np.bincount(regions, counts, minlength=num_regions)
        share[t] = np.where(occupied, top / np.maximum(population, 1), np.nan)
        incumbent = controller[t]
    return controller, share


def control_changes(controller: Any) -> np.ndarray:
    """[T, G] bool: the region's controller at step t differs from the one at t - 1, both occupied (row 0
    is all False)."""
    c = np.asarray(controller, dtype=np.int64)
    if c.ndim != 2:
        raise ValueError(f"controller: expected a [T, G] array, got shape {c.shape}")
    changed = np.zeros(c.shape, dtype=bool)
    changed[1:] = (c[1:] != c[:-1]) & (c[1:] != NO_CONTROLLER) & (c[:-1] != NO_CONTROLLER)
    return changed


def control_reward_gap(reward: Any, region: Any, lineage: Any, controller: Any, alive: Any = None) -> np.ndarray:
    """[T, G] mean reward of the controller's members minus the mean reward of the region's other members,
    nan where the region lacks either group. ``reward``, ``region``, ``lineage`` [T, N]; ``controller``
    [T, G] (from `controllers`)."""
    c = np.asarray(controller, dtype=np.int64)
    g = int_array(region, "region", 0, c.shape[1])
    r = finite_float_array(reward, "reward", 2)
    lin = np.asarray(lineage, dtype=np.int64)
    for name, array in (("reward", r), ("lineage", lin)):
        if array.shape != g.shape:
            raise ValueError(f"{name}: expected shape {g.shape} like region, got {array.shape}")
    if c.shape[0] != g.shape[0]:
        raise ValueError(f"controller: expected {g.shape[0]} steps like region, got {c.shape[0]}")
    mask = _alive(alive, g.shape)
    member = lin == np.take_along_axis(c, g, axis=1)  # [T, N] the row belongs to its region's controller
    inside = region_means(g, r, c.shape[1], mask & member)
    outside = region_means(g, r, c.shape[1], mask & ~member)
    return inside - outside


def migration_flows(region: Any, ids: Any, num_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Moves between consecutive recorded steps: flows [G, G] (flows[a, b]: agents seen in region a at one
    step and in b at the next; the diagonal counts stays) and moves [T - 1] (agents that changed region
    between step t and t + 1). ``region``, ``ids`` [T, N]: each row's region and agent id at each step; a
    row whose agent changed between two steps (a death and a birth) is not counted."""
    g = int_array(region, "region", 0, num_regions)
    agent = np.asarray(ids, dtype=np.int64)
    if g.ndim != 2 or agent.shape != g.shape:
        raise ValueError(f"ids: expected a [T, N] array like region {g.shape}, got {agent.shape}")
    same = agent[1:] == agent[:-1]  # [T-1, N]
    source, target = g[:-1][same], g[1:][same]
    flows = np.bincount(source * num_regions + target, minlength=num_regions * num_regions)
    moves = (same & (g[1:] != g[:-1])).sum(axis=1)
    return flows.reshape(num_regions, num_regions), moves


def net_inflow(flows: Any) -> np.ndarray:
    """[G] arrivals minus departures of each region (flows' column sums minus row sums, stays excluded)."""
    f = np.asarray(flows, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != f.shape[1]:
        raise ValueError(f"flows: expected a square [G, G] array, got shape {f.shape}")
    off = f - np.diag(np.diag(f))
    return off.sum(axis=0) - off.sum(axis=1)


# -- one rollout, seeds, the sweep ---------------------------------------------------------------------
class SpaceRecorder:
    """Per-step regional figures of one spatial rollout (NumPy; one `record` call per step), for
    `summarise_space`, `dispersion_outcome` and the figures. ``rewards``: also keep every row's reward
    [T, N] (float32; the control reward gap needs it, the main rollouts only)."""

    def __init__(self, num_slots: int, num_regions: int, num_goods: int, steps: int, rewards: bool = False):
        self.num_regions = num_regions
        dtype = np.int16 if num_regions <= np.iinfo(np.int16).max else np.int32
        self.regions = np.zeros((steps, num_slots), dtype=dtype)  # [T, N] region each row worked and traded in
        self.region_prices = np.full((steps, num_regions, num_goods), np.nan)  # [T, G, R] relative, sum 1
        self.region_wealth = np.full((steps, num_regions), np.nan)  # [T, G] mean holdings after trade
        self.movers = np.zeros(steps, dtype=np.int64)  # [T] agents that changed region
        self.reward_rows = np.zeros((steps, num_slots), dtype=np.float32) if rewards else None  # [T, N]

    def record(self, t: int, region, region_prices, after_trade, movers: int, reward=None) -> None:
        """Step t (1-based): ``region`` [N] where each acting row worked and traded (after its move),
        ``region_prices`` [G, R] the step's markets, ``after_trade`` [N, R] holdings leaving the market,
        ``movers`` agents that moved, ``reward`` [N] (kept when the recorder keeps rewards)."""
        row = t - 1
        self.regions[row] = region
        self.region_prices[row] = region_prices
        self.region_wealth[row] = region_means(region, np.asarray(after_trade).sum(axis=1), self.num_regions)
        self.movers[row] = movers
        if self.reward_rows is not None:
            self.reward_rows[row] = reward

    def result(self) -> dict:
        data = {"regions": self.regions, "region_prices": self.region_prices, "region_wealth": self.region_wealth,
                "movers": self.movers}
        if self.reward_rows is not None:
            data["reward_rows"] = self.reward_rows
        return data


def _mean(values) -> Optional[float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def dispersion_outcome(trace: dict) -> dict:
    """The law-of-one-price numbers of any spatial trace (``region_prices`` [T, G, R]; ``movers`` [T], else
    ``regions`` and ``ids`` [T, N]): dispersion early, late and over the rollout, its trend, moves per step."""
    from homoecon_env.diagnostics.analysis import edge_windows

    num_regions = trace["region_prices"].shape[1]
    dispersion = price_dispersion(trace["region_prices"], region_counts(trace["regions"], num_regions))
    early, late = edge_windows(len(dispersion))
    moves = (trace["movers"] if "movers" in trace  # the economy's own count, else what the rows show
             else migration_flows(trace["regions"], trace["ids"], num_regions)[1])
    return {"space_dispersion_early": _mean(dispersion[early]), "space_dispersion_late": _mean(dispersion[late]),
            "space_dispersion_mean": _mean(dispersion), "space_dispersion_trend": dispersion_trend(dispersion),
            "space_moves_per_step": _mean(moves) if moves.size else None}


def summarise_space(trace: dict, num_regions: int) -> dict:
    """Flat ``space_*`` name -> number of one detailed spatial rollout: the dispersion numbers, occupied
    regions, and territory (needs the genealogy: control share, changes per 100 steps, distinct
    controllers late, the controller's reward gap). "late" is the last 20% of the steps."""
    from homoecon_env.diagnostics.analysis import edge_windows

    s = dispersion_outcome(trace)
    steps = len(trace["regions"])
    late = edge_windows(steps)[1]
    population = region_counts(trace["regions"], num_regions)
    s["space_occupied_regions_late"] = _mean((population[late] > 0).sum(axis=1))
    if "agents" not in trace:
        return s
    lineage = lineage_rows(trace["ids"], trace["agents"])
    controller, share = controllers(trace["regions"], lineage, num_regions)
    changes = control_changes(controller)
    gap = control_reward_gap(trace["reward_rows"], trace["regions"], lineage, controller)
    late_controllers = controller[late][controller[late] != NO_CONTROLLER]
    s.update({"space_control_share_late": _mean(share[late]),
              "space_control_changes_per_100_steps": float(changes.sum() * TREND_STEPS / max(steps - 1, 1)),
              "space_controllers_late": int(np.unique(late_controllers).size),
              "space_control_reward_gap": _mean(gap), "space_control_reward_gap_late": _mean(gap[late])})
    return s


def sweep_results(outcomes: dict[float, list[dict]]) -> dict:
    """metrics.json's "space" sweep from per-cost, per-seed `dispersion_outcome`s (seed k of every cost shares
    the economy seed): for every cost, each number's mean and 95% CI over seeds (per_seed kept); the late
    dispersion at the highest cost minus at the lowest, paired by seed, with a verdict ("higher", "lower",
    "no significant difference": the CI excludes zero or not); and the Spearman correlation of cost with
    late dispersion over every seed and cost (descriptive)."""
    from homoecon_env.diagnostics import analysis, stats

    result = {"costs": [float(c) for c in outcomes], "arms": {}}
    for cost, per_seed in outcomes.items():
        arm = {}
        for key in per_seed[0]:
            values = [o[key] for o in per_seed]
            defined = [v for v in values if v is not None]
            arm[key] = {**(analysis.interval(defined) if defined else {"mean": None, "ci95": None}),
                        "per_seed": values}
        result["arms"][str(float(cost))] = arm
    pairs = [(float(cost), o["space_dispersion_late"]) for cost, per_seed in outcomes.items() for o in per_seed
             if o["space_dispersion_late"] is not None]
    result["cost_dispersion_spearman"] = (analysis.finite(stats.spearman([c for c, _ in pairs], [d for _, d in pairs]))
                                          if len({c for c, _ in pairs}) >= 2 else None)
    low, high = min(outcomes), max(outcomes)
    paired = [(a["space_dispersion_late"], b["space_dispersion_late"]) for a, b in zip(outcomes[high], outcomes[low])
              if a["space_dispersion_late"] is not None and b["space_dispersion_late"] is not None]
    difference = {"mean": None, "ci95": None}
    if high != low and len(paired) >= 2:
        difference = analysis.interval([a - b for a, b in paired])
    significant = difference["ci95"] is not None and abs(difference["mean"]) > difference["ci95"]
    result["highest_minus_lowest"] = {"highest": float(high), "lowest": float(low), **difference, "pairs": len(paired),
                                      "verdict": ("higher" if difference["mean"] > 0 else "lower") if significant
                                      else "no significant difference"}
    return result


# -- report.md ------------------------------------------------------------------------------------------
def report_section(m: dict) -> list[str]:
    """report.md's "Space" section from the metrics dict (every number read from it); [] when the evaluated
    economy is not spatial (no "space" entry), so other reports are unchanged."""
    from homoecon_env.diagnostics.report import number, with_ci  # report imports nothing from here

    space = m.get("space")
    if not space:
        return []
    s, figures = m["main"]["summary"], m["figures"]
    mean = lambda key: with_ci(s[key]) if key in s else "n/a"  # noqa: E731
    lines = ["## Space", "",
             f"A world of {number(space['width'])} x {number(space['height'])} regions, each with its own market; "
             f"moving to a neighbouring region costs a fraction {number(space['migration_cost'])} of every holding. "
             f"Late, {mean('space_occupied_regions_late')} regions were occupied. Maps of the first rollout over "
             f"time (population, relative price of {space['map_good']}, mean wealth, controlling lineage; also "
             f"animated in [{figures['space_maps_gif']}]({figures['space_maps_gif']})):", "",
             f"![regional maps]({figures['space_maps']})", "",
             "### The law of one price", "",
             "Price dispersion is the standard deviation across regions of log relative prices, averaged over goods "
             f"(0: one price everywhere); a region counts for a good when at least {number(space['min_market'])} "
             "agents live there and the good has a positive price. Its trend is the slope of log dispersion per "
             f"{number(space['trend_steps'])} steps (negative: prices converge).", "",
             f"In the evaluated economy the dispersion was {mean('space_dispersion_early')} early and "
             f"{mean('space_dispersion_late')} late (trend {mean('space_dispersion_trend')}); agents moved "
             f"{mean('space_moves_per_step')} times per step.", "",
             f"![price dispersion]({figures['space_dispersion']})", ""]
    sweep = space.get("sweep")
    if sweep:
        lines += [f"Against migration cost ({number(space['sweep_seeds'])} seeds per cost, "
                  f"{number(space['sweep_steps'])} steps each, the evaluated learner, "
                  + ("learning" if space["sweep_learn"] else "frozen") + "; means ± 95% CI over seeds):", "",
                  "| migration cost | moves per step | dispersion early | dispersion late | trend |",
                  "|---|---|---|---|---|"]
        for cost in sweep["costs"]:
            arm = sweep["arms"][str(float(cost))]
            lines.append(f"| {number(cost)} | {with_ci(arm['space_moves_per_step'])} | "
                         f"{with_ci(arm['space_dispersion_early'])} | {with_ci(arm['space_dispersion_late'])} | "
                         f"{with_ci(arm['space_dispersion_trend'])} |")
        rho, gap = sweep["cost_dispersion_spearman"], sweep["highest_minus_lowest"]
        answer = {"higher": "yes, prices stay further apart when moving is dear",
                  "lower": "no, the opposite: prices end closer together when moving is dear",
                  "no significant difference": "not significantly"}[gap["verdict"]]
        lines += ["", "**Does dearer migration keep regional prices apart?** "
                  f"{answer.capitalize()}: late dispersion at cost {number(gap['highest'])} minus at cost "
                  f"{number(gap['lowest'])}, paired by seed: "
                  f"{with_ci(gap)} ({number(gap['pairs'])} pairs). Spearman correlation of cost with late dispersion "
                  f"over all rollouts: {number(rho)}.", "",
                  f"![dispersion against migration cost]({figures['space_dispersion_cost']})",
                  ""]
    lines += ["### Territory", ""]
    if "space_control_share_late" in s:
        lines += ["A region is controlled by the founder lineage (first-parent line) with the most members there; "
                  "on a tie the incumbent keeps it, else the oldest founder. A change of control counts an occupied "
                  "region passing from one lineage to another.", "",
                  "| measure | value |", "|---|---|",
                  f"| controller's share of its region (late) | {mean('space_control_share_late')} |",
                  f"| changes of control per 100 steps (all regions) | {mean('space_control_changes_per_100_steps')} |",
                  f"| distinct controlling lineages (late) | {mean('space_controllers_late')} |",
                  f"| reward gap, controller's members − others (per step) | {mean('space_control_reward_gap')} |",
                  f"| reward gap, late | {mean('space_control_reward_gap_late')} |", "",
                  f"![control over time]({figures['space_control']})", ""]
    else:
        lines += ["No genealogy was recorded, so control is not measured.", ""]
    lines += ["### Migration", "",
              "Flows between regions over the first rollout (an agent seen in one region and in another at the next "
              "step), and each region's net inflow.", "", f"![migration flows]({figures['space_flows']})", ""]
    return lines
