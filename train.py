"""Train independent per-agent learners in the HomoEcon economy (docs/design.md section 6).

    python train.py                                   # the default 50-agent economy, REINFORCE
    python train.py --learner random --seed 2         # a baseline
    python train.py --learner mymodule:MyLearner      # your own Learner class (mymodule.py in this folder)
    python train.py --num-agents 200 --max-age 20 --steps 20000
    python train.py --resume runs/<run_name> --steps 20000   # continue bit-exactly up to 20000 steps
    tensorboard --logdir runs

Every flag is a field of RunArgs, EconomyConfig or LearnerConfig (`--help` lists them with their
help and defaults). Output in runs/<run_name>/ (or --run-dir, which must be new or empty):
config.json (which records --learner, so --resume and evaluate.py --run find a plug-in again),
TensorBoard event files and checkpoint.pt; the tags are listed in homoecon_lab.recorder.
SIGTERM or SIGINT (Ctrl-C) stops the run after the current step with a final checkpoint (exit code
128 + the signal); a learner that diverges, a full disk or a broken run folder ends the run with one
message naming the step, and the last good checkpoint is left as it was.
"""
from __future__ import annotations

import os
import sys

from agents.base import NonFiniteLossError
from agents.checkpoint import CheckpointError
from homoecon_lab.cli import parse_train_args
from homoecon_lab.errors import RunError, StopRequested
from homoecon_lab.training import train


def main(argv=None) -> None:
    settings = parse_train_args(argv, description=__doc__.split("\n\n")[0])
    try:
        run_dir = train(settings)
    except StopRequested as stop:
        print(f"train.py: stopped by {stop.signal_name} at {stop.message}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except (NonFiniteLossError, CheckpointError, RunError) as error:
        sys.exit(f"train.py: error: {error}")
    except OSError as error:
        sys.exit(f"train.py: error: {error.filename + ': ' if error.filename else ''}{error.strerror or error}")
    print(f"done: {settings.run.steps} steps in {run_dir} (tensorboard --logdir {os.path.dirname(run_dir) or '.'})")


if __name__ == "__main__":
    main()
