"""Diagnostics: arrays in, numbers and figures out (DESIGN.md sections 1 and 6).

``metrics`` holds pure NumPy/networkx functions (Gini, specialization, participation ratio,
attention entropy, favourite graph, PageRank, price-scarcity correlation, confidence intervals).
``plots`` turns histories into matplotlib figures; import it explicitly, since it loads
matplotlib and nothing else in the package should.

Diagnostics is a leaf: any layer may call it and it calls none of them.
"""
