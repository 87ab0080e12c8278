"""Evaluate HomoEcon learners: rollouts, figures, ablations and a report (docs/design.md section 6).

    python evaluate.py                                    # untrained (freshly initialised) REINFORCE agents
    python evaluate.py --run runs/<run_name> --out eval_run
    python evaluate.py --run runs/<run_name> --no-learn --deterministic   # frozen, acting with the policy's mode
    python evaluate.py --steps 600 --seeds 5 --num-agents 100 --ablation-seeds 10
    python evaluate.py --learner mymodule:MyLearner       # a plug-in learner (mymodule.py in this folder), untrained
    python evaluate.py --backend ray                      # the rollouts as Ray tasks on a local Ray instance
    python evaluate.py --backend ray --address auto --workers 64   # ... on a running Ray cluster, 64 at a time

Top to bottom:
1. Main rollouts: `--seeds` episodes of `--steps` steps on the batched `Economy`, driven by the
   learner (the trained run's, or freshly initialised `--learner` agents, REINFORCE by default). The
   learners keep learning during these rollouts, as they do in training (`--no-learn` freezes their
   weights; newborns inherit their parents' networks either way): the economy is a population that learns and
   evolves, and the research questions ask how it changes over time. The first seed is recorded in
   detail for the figures; every seed contributes to the means and 95% confidence intervals.
2. Ablations over `--ablation-seeds` paired seeds. Per seed, every arm starts from fresh networks,
   trains (learning on) for `--ablation-train-steps` steps on economy seed A, then is evaluated
   frozen for `--ablation-steps` steps on a held-out economy seed B; A, B and the learner's seed are
   shared by all arms of a seed, so arms are compared seed by seed (paired differences):
   - social filter: REINFORCE with its learned attention vs the `uniform_attention` ablation;
   - tastes: REINFORCE with heterogeneous vs homogeneous utility weights;
   - policy: trained vs uniformly random actions (trained = the run's learner, frozen, with `--run`;
     else the `--learner` after the same short training: for REINFORCE, the arm above).
   Outcomes: mean reward, Gini of wealth, specialization index and trade volume.
3. Spatial economies (docs/design.md section 13, e.g. `--scenario spatial`): a sweep of `--migration-costs`
   (`--seeds` rollouts each, the main rollouts' seeds) for the law of one price, and report.md's Space section
   (maps over time as space_maps.png and space_maps.gif, price dispersion, territory control, migration flows).
4. Outputs in `--out`: trade_scatter/step_XXXX.png, trade.gif, gini.png, dashboard.png, one PNG per
   single figure, metrics.json, genealogy.csv and report.md. Every number in report.md is read from
   the dict that metrics.json holds. Every file is written atomically (temporary file + rename).

The work happens in homoecon_lab.evaluation (the run, outputs; its plan in evaluation_plan, its
per-scenario sections in evaluation_sections) and homoecon_lab.rollouts (the
rollouts, in worker processes or, with `--backend ray`, as Ray tasks: same results). A learner that
diverges, a corrupt run, a full disk or a missing Ray ends with one message, never a traceback.
"""
from __future__ import annotations

import os
import signal
import sys

from agents.checkpoint import CheckpointError
from homoecon_lab.cli import parse_eval_args
from homoecon_lab.errors import RunError, StopRequested
from homoecon_lab.evaluation import evaluate


def _raise_stop(signum, frame):
    raise StopRequested(signum, "the files already written are complete")


def main(argv=None) -> None:
    paragraphs = __doc__.split("\n\n")
    args = parse_eval_args(argv, description=paragraphs[0], epilog="\n\n".join(paragraphs[1:2]))
    previous = signal.signal(signal.SIGTERM, _raise_stop)  # unwinds like Ctrl-C (run_tasks only sets a flag)
    try:
        result = evaluate(args)
    except (KeyboardInterrupt, StopRequested) as stop:  # run_tasks has dropped the rollouts, ended its workers
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"evaluate.py: stopped by {signal.Signals(signum).name}; the files already written are complete",
              file=sys.stderr)
        sys.exit(128 + signum)
    except (RunError, CheckpointError) as error:
        sys.exit(f"evaluate.py: error: {error}")
    except OSError as error:
        sys.exit(f"evaluate.py: error: {error.filename + ': ' if error.filename else ''}{error.strerror or error}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"done in {result['meta']['wall_seconds']} s: {os.path.join(args.out, 'report.md')}")


if __name__ == "__main__":
    main()
