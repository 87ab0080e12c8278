"""Sweep train.py settings over seeds on Ray Tune: one trial per grid point and seed (docs/design.md section 10).

    python sweep.py --seeds 5 --grid num_agents=50,200 --grid learner=reinforce,uniform_attention --steps 5000
    python sweep.py --seeds 3 --grid learner=reinforce,mymodule:MyLearner --name mine   # a plug-in learner
    ray start --head && python sweep.py --address auto ...                              # a running cluster
    tensorboard --logdir sweeps/<name>

Every train.py flag sets every trial (--steps, --num-agents, ...); --grid FIELD=v1,v2 sweeps any of
them (repeat it for more axes). Each trial is one train() call with one CPU and one thread, in
sweeps/<name>/runs/<grid point>_s<seed>/ (a train.py run folder). results.csv has one row per trial,
summary.md and comparison.png the final metrics per grid point (mean and 95% CI over seeds). Ctrl-C,
SIGTERM or a lost machine: run the same command again; finished trials are kept, the others continue
from their checkpoints. Needs Ray Tune: pip install -e ".[ray]".
"""
from __future__ import annotations

import os
import sys

from homoecon_lab.sweep_runner import run_sweep
from homoecon_lab.sweeps import SweepError, parse_sweep_args


def main(argv=None) -> None:
    sweep = parse_sweep_args(argv, description=__doc__.split("\n\n")[0])
    try:
        rows = run_sweep(sweep)
    except SweepError as error:
        sys.exit(f"sweep.py: error: {error}")
    except KeyboardInterrupt:
        sys.exit(f"sweep.py: interrupted; run the same command again to resume {sweep.folder}")
    done = sum(row["status"] == "ok" for row in rows)
    failed = sum(row["status"] == "error" for row in rows)
    where = os.path.relpath(sweep.folder)
    where = sweep.folder if where.startswith("..") else where
    print(f"{done} of {len(rows)} trials finished, {failed} failed: {where}/summary.md, results.csv, comparison.png "
          f"(tensorboard --logdir {where})")
    if done < len(rows):
        sys.exit(1 if failed else f"sweep.py: {len(rows) - done - failed} trials unfinished; "
                 "run the same command again to resume")


if __name__ == "__main__":
    main()
