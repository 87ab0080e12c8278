"""Diagnostics: arrays in, numbers and figures out (docs/design.md sections 1 and 6).

- ``metrics``: economy-wide measures (Gini, specialization, participation ratio, attention
  entropy, prices, trade volume). Importing it loads NumPy only, so the core may call it.
- ``graphs`` (networkx): favourite graph, degrees, PageRank, component shapes, genealogies.
- ``stats`` (scipy): Spearman and Pearson correlations, 95% confidence intervals over seeds.
- ``analysis`` turns the traces evaluate.py records into the numbers of metrics.json, and
  ``report`` turns those into report.md.
- ``plots`` (a package) turns histories into matplotlib figures, and ``report_figures`` writes the
  figure files of one evaluated rollout; ``painter`` draws in a worker process.

Nothing here is imported by ``import homoecon_env``: import these modules explicitly, since all but
``metrics`` (and the shared checks in ``arrays``) load scipy, networkx or matplotlib. Diagnostics is
a leaf: any layer may call it and it calls none of them (it writes files through the stdlib-only
``homoecon_env.files``).
"""
