"""The experiment layer shared by train.py and evaluate.py (docs/design.md section 6).

One module per job: `settings` (the settings dataclasses, config.json I/O), `cli` (flags from the
dataclasses with tyro, parser-style errors), `seeding` (one seeding block, derived seeds, RNG states
as plain data), `rundir` (run folders: refuse occupied ones, clean stale temporary files),
`recorder` (TensorBoard scalars, histograms and dashboards), `stopping` (SIGTERM/SIGINT become a
clean stop), `training` (the `train(settings)` loop), `rollouts` and `evaluation` (evaluate.py's
rollouts, flags, run and outputs), `evaluation_plan` (which rollouts and ablation arms run) and
`evaluation_sections` (metrics.json's per-scenario entries), `sweeps`, `sweep_runner` and
`sweep_summary` (sweep.py's grid and trials, their run on Ray Tune, results.csv, summary.md and the
figure). The scripts are thin command lines over these modules; a sweep trial calls
`homoecon_lab.training.train(settings)` directly.
"""
from homoecon_lab.errors import RunError, StopRequested

__all__ = ["RunError", "StopRequested"]
