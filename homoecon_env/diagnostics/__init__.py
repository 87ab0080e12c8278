"""Diagnostics: arrays in, numbers and figures out (DESIGN.md sections 1 and 6).

``metrics`` holds pure NumPy/networkx functions (Gini, specialization, participation ratio,
attention entropy, favourite graph, PageRank, Spearman and price-scarcity correlations, confidence
intervals). ``analysis`` turns the traces evaluate.py records into the numbers of metrics.json, and
``report`` turns those into report.md. ``plots`` turns histories into matplotlib figures, and
``report_figures`` writes the figure files of one evaluated rollout; import these two explicitly,
since they load matplotlib and nothing else in the package should.

Diagnostics is a leaf: any layer may call it and it calls none of them (it writes files through
the stdlib-only ``homoecon_env.files``).
"""
