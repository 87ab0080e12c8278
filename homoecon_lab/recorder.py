"""What train.py logs to TensorBoard: interval means, the dashboard's time series, histograms and images.

Tags (x axis = env steps), every --log-every steps, means over the interval unless said: reward/mean;
economy/{gini, trade_volume, price/<good>, total/<good>, produced/<good>}; population/{births,
deaths_age, deaths_starvation, mean_age}; jobs/{share/<job>, mean_effort}; trade/{iterations,
init_iterations, converged (fraction of steps whose market converged), kkt_residual (max),
ir_violation (max)}; learner/<metric> (over the updates in the interval); spatial economies only
(docs/design.md section 13): space/{movers, occupied_regions, migration_lost (goods per step),
price_dispersion (across regional markets, diagnostics.space; over the steps where defined)}; at the logged step
comm/participation_ratio, comm/message_entropy (bits, diagnostics.communication) and
social/attention_entropy; perf/steps_per_sec. Every --dashboard-every steps: histograms and the
`dashboard` image (docs/design.md section 6).

At the end of a run, final_metrics.json holds the run's final metrics (`Recorder.final_metrics`): the
same per-step figures (tags as above) averaged over the last 10% of the run's env steps (at least one
step; maxima for the trade/ maxima, learner/ over the updates in those steps). They are computed from
every step, not from the logs, so they do not depend on --log-every; a sweep compares them (section 10).
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy
from homoecon_env.core.actions import token_one_hot
from homoecon_env.diagnostics import communication, metrics, space
from homoecon_env.diagnostics.painter import BackgroundPainter
from homoecon_env.files import atomic_write_text
from homoecon_lab.settings import Settings, flag

AVERAGED = {"mean_reward": "reward/mean", "gini": "economy/gini", "trade_volume": "economy/trade_volume",
            "births": "population/births", "deaths_age": "population/deaths_age",
            "deaths_starvation": "population/deaths_starvation", "mean_age": "population/mean_age",
            "mean_effort": "jobs/mean_effort", "trade_iterations": "trade/iterations",
            "trade_init_iterations": "trade/init_iterations", "trade_converged": "trade/converged"}
PER_RESOURCE = {"prices": "economy/price", "totals": "economy/total", "produced": "economy/produced"}
MAXIMA = {"trade_ir_violation": "trade/ir_violation", "trade_kkt_residual": "trade/kkt_residual"}
# Spatial economies only (docs/design.md section 13; diagnostics.space): interval means per step.
SPATIAL = {"space_movers": "space/movers", "space_occupied_regions": "space/occupied_regions",
           "space_migration_lost": "space/migration_lost"}
SPATIAL_DISPERSION = "space/price_dispersion"  # mean over the steps where it is defined (two markets or more)
MAX_HISTORY = 2000  # dashboard time-series points kept (thinned by half when full)
FINAL_FRACTION = 0.1  # final metrics: means over this last fraction of a run's env steps
FINAL_METRICS = "final_metrics.json"


def first_final_step(steps: int) -> int:
    """The first env step (1-based) of a ``steps``-step run's final window: its last 10%, at least one step."""
    return steps - max(1, math.ceil(FINAL_FRACTION * steps)) + 1


def to_plain(value):
    """NumPy arrays -> tensors, NumPy scalars -> Python numbers, containers recursively (checkpoint-safe)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def from_plain(value):
    """The inverse of `to_plain` up to container kind: tensors -> NumPy arrays."""
    if isinstance(value, torch.Tensor):
        return value.numpy().copy()
    if isinstance(value, dict):
        return {key: from_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_plain(item) for item in value]
    return value


class Recorder:
    """Sums of the economy's per-step figures between two logs, and the dashboard's time series.

    Its state goes into the checkpoint so a resumed run logs the same numbers. Logging reads
    RNG-free diagnostics only, so it never changes the trajectory.
    """

    def __init__(self, config: EconomyConfig):
        self.config = config
        self.sums, self.count, self.learned, self.learner_count = {}, 0, {}, 0
        self.maxima = dict.fromkeys(MAXIMA, 0.0)
        self.history = {}  # dashboard key -> one entry per log (plots.DASHBOARD_KEYS)
        self.final = _empty_window(None)  # sums over the final window (`begin_final_window`)
        self.start_clock(0)

    def start_clock(self, step: int) -> None:
        """perf/steps_per_sec counts wall time from here (the loop's start) on."""
        self.clock, self.clock_step = time.perf_counter(), step

    def begin_final_window(self, steps: int, step: int) -> None:
        """Sum the final metrics over steps `first_final_step(steps)` .. ``steps``; ``step``: steps done.

        A resumed run keeps its sums when the window is the same. When --resume changed --steps so that
        the new window began before ``step``, the window starts afresh after ``step`` (final_metrics.json
        says which steps it averages)."""
        first = first_final_step(steps)
        if self.final["first_step"] != first:
            self.final = _empty_window(max(first, step + 1))

    def add(self, stats: dict, learned: dict, step: int | None = None) -> None:
        """Add one env step's figures (``step``: its 1-based number, for the final window)."""
        windows = [self.__dict__]
        if step is not None and self.final["first_step"] is not None and step >= self.final["first_step"]:
            windows.append(self.final)
        for window in windows:
            sums, maxima, learned_sums = window["sums"], window["maxima"], window["learned"]
            for key in (*AVERAGED, *PER_RESOURCE, "job_counts"):
                sums[key] = sums.get(key, 0.0) + np.asarray(stats[key], dtype=np.float64)
            if self.config.spatial:
                for key, value in spatial_figures(stats).items():
                    sums[key] = sums.get(key, 0.0) + value
            for key in MAXIMA:
                maxima[key] = max(maxima.get(key, 0.0), float(stats[key]))
            window["count"] += 1
            if learned:
                for key, value in learned.items():
                    learned_sums[key] = learned_sums.get(key, 0.0) + float(value)
                window["learner_count"] += 1
        if len(windows) == 2:
            self.final["last_step"] = step

    def _scalars(self, window: dict) -> dict:
        """Tag -> the window's mean (maxima for MAXIMA, learner/ over its updates)."""
        mean = {key: value / max(window["count"], 1) for key, value in window["sums"].items()}
        scalars = {tag: float(mean[key]) for key, tag in AVERAGED.items()}
        for key, prefix in PER_RESOURCE.items():
            scalars.update({f"{prefix}/{name}": float(v) for name, v in zip(self.config.resources, mean[key])})
        shares = mean["job_counts"] / self.config.num_agents
        scalars.update({f"jobs/share/{job.name}": float(s) for job, s in zip(self.config.jobs, shares)})
        scalars.update({tag: float(window["maxima"].get(key, 0.0)) for key, tag in MAXIMA.items()})
        scalars.update({f"learner/{k}": v / window["learner_count"] for k, v in window["learned"].items()})
        if self.config.spatial and window["count"]:
            scalars.update({tag: float(mean[key]) for key, tag in SPATIAL.items()})
            if window["sums"].get("space_dispersion_steps"):
                scalars[SPATIAL_DISPERSION] = float(window["sums"]["space_dispersion"]
                                                    / window["sums"]["space_dispersion_steps"])
        return scalars

    def final_metrics(self) -> dict:
        """final_metrics.json's content: the window's steps and its mean of every per-step figure."""
        window = self.final
        if not window["count"]:
            raise ValueError("final metrics: no step of the final window was recorded")
        return {"first_step": window["first_step"], "last_step": window["last_step"], "steps": window["count"],
                "metrics": self._scalars(window)}

    def write_final_metrics(self, run_dir: str) -> str:
        """Write final_metrics.json into ``run_dir`` (atomically); returns its path."""
        path = os.path.join(run_dir, FINAL_METRICS)
        atomic_write_text(path, json.dumps(self.final_metrics(), indent=2, sort_keys=True) + "\n")
        return path

    def write(self, writer: SummaryWriter, step: int, broadcasts, attention, peer_mask) -> dict:
        """Log the interval's means and this step's communication figures; reset the sums.
        ``broadcasts``: the step's broadcast actions ([N, B] floats, or [N, L] tokens in the symbolic mode)."""
        mean = {key: value / max(self.count, 1) for key, value in self.sums.items()}
        shares = mean["job_counts"] / self.config.num_agents
        scalars = self._scalars(self.__dict__)
        vectors, messages = message_views(self.config, broadcasts)
        spectrum = metrics.covariance_spectrum(vectors)
        scalars["comm/participation_ratio"] = metrics.participation_ratio(spectrum)
        scalars["comm/message_entropy"] = communication.message_entropy(messages)
        if attention is not None:
            scalars["social/attention_entropy"] = metrics.attention_entropy(attention.numpy(), peer_mask.numpy())
        scalars["perf/steps_per_sec"] = (step - self.clock_step) / max(time.perf_counter() - self.clock, 1e-9)
        self.start_clock(step)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        row = {"steps": step, "reward": scalars["reward/mean"], "gini": scalars["economy/gini"],
               "totals": mean["totals"], "prices": mean["prices"], "job_shares": shares, "births": mean["births"],
               "deaths_age": mean["deaths_age"], "deaths_starvation": mean["deaths_starvation"],
               "participation_ratio": scalars["comm/participation_ratio"], "spectra": spectrum,
               "attention_entropy": scalars.get("social/attention_entropy", np.nan)}
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)
            if len(self.history[key]) > MAX_HISTORY:
                self.history[key] = self.history[key][::2]
        self.sums, self.count, self.learned, self.learner_count = {}, 0, {}, 0
        self.maxima = dict.fromkeys(MAXIMA, 0.0)
        return scalars

    def snapshot(self, writer: SummaryWriter, step: int, economy: Economy, observation, actions, out, attention,
                 painter: BackgroundPainter) -> None:
        """Histograms of the population, and the dashboard image handed to ``painter`` (logged by
        `write_images` once drawn: about 1.5 s at 50 agents, so a worker process draws it).

        Ages, wealth and tastes are the population after the step; broadcasts, jobs, attention and
        trades are what the agents that acted in it did."""
        state, config = economy.state, self.config
        writer.add_histogram("population/ages", state.ages, step)
        writer.add_histogram("economy/wealth", state.holdings.sum(dim=1), step)
        for r, name in enumerate(config.resources):
            writer.add_histogram(f"population/utility_weights/{name}", state.utility_weights[:, r], step)
        history = {key: np.asarray(values) for key, values in self.history.items() if values}
        if attention is not None:
            writer.add_histogram("social/attention_weights", attention[observation.peer_mask > 0], step)
            history.update(attention=attention.numpy(), peer_index=observation.peer_index.numpy())
        history.update(ages=state.ages.numpy(), broadcasts=message_views(config, actions.broadcast)[0],
                       jobs=actions.job.numpy(),
                       resource_names=list(config.resources), job_names=[job.name for job in config.jobs],
                       max_age=config.max_age, holdings_before=out.pre_trade.numpy(),
                       holdings_after=out.trade.allocation.numpy())
        if "attention_entropy" in history and np.isnan(history["attention_entropy"]).all():
            del history["attention_entropy"]
        painter.submit(step, history, f"step {step}")

    @staticmethod
    def write_images(writer: SummaryWriter, painter: BackgroundPainter, wait: bool = False) -> None:
        """Log the dashboards drawn so far (all of them with ``wait``) at the steps they show."""
        for step, image in painter.finished(wait):
            writer.add_image("dashboard", image, step, dataformats="HWC")

    def state_dict(self) -> dict:
        """Plain data only (tensors, numbers, lists, dicts): NumPy arrays become tensors."""
        return to_plain({"sums": self.sums, "count": self.count, "learned": self.learned,
                         "learner_count": self.learner_count, "maxima": self.maxima, "history": self.history,
                         "final": self.final})

    def load_state_dict(self, state: dict) -> None:
        for key, value in from_plain(state).items():
            setattr(self, key, value)


def spatial_figures(stats: dict) -> dict:
    """One spatial step's figures to sum (SPATIAL; the dispersion as a sum and a count of defined steps):
    movers, occupied regions, goods lost to migration, and the price dispersion across regional markets
    (diagnostics.space.price_dispersion over the markets with at least MIN_MARKET traders)."""
    dispersion = float(space.price_dispersion(np.asarray(stats["region_prices"], dtype=np.float64),
                                              np.asarray(stats["region_traders"], dtype=np.float64)))
    defined = math.isfinite(dispersion)
    return {"space_movers": float(stats["movers"]),
            "space_occupied_regions": float(np.count_nonzero(np.asarray(stats["region_population"]))),
            "space_migration_lost": float(np.sum(stats["migration_lost"])),
            "space_dispersion": dispersion if defined else 0.0, "space_dispersion_steps": float(defined)}


def _empty_window(first_step) -> dict:
    return {"first_step": first_step, "last_step": None, "sums": {}, "count": 0, "learned": {}, "learner_count": 0,
            "maxima": {}}


def hyperparameter_table(settings: Settings) -> str:
    """The settings as a Markdown table (TensorBoard's Text tab)."""
    rows = [f"| {group} | `{flag(key)}` | `{value}` |" for group, values in settings.to_json().items()
            for key, value in values.items()]
    return "\n".join(["| group | flag | value |", "|---|---|---|", *rows])


def message_views(config: EconomyConfig, broadcast) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [N, W] float64, messages) of one step's broadcast actions (tensor or array): continuous,
    both are the [N, B] floats; symbolic (docs/design.md section 11), the vectors are the [N, L * V] token
    one-hots peers see (for covariance spectra and PCA) and the messages the [N, L] int64 tokens (for
    entropy, topographic similarity and mutual information, which treat integers as symbols)."""
    array = broadcast.detach().cpu().numpy() if isinstance(broadcast, torch.Tensor) else np.asarray(broadcast)
    if config.symbolic:
        tokens = array.astype(np.int64)
        return token_one_hot(tokens, config.vocab_size), tokens
    vectors = array.astype(np.float64)
    return vectors, vectors
