"""Generalization to unseen cameras: the leave-one-domain-out benchmark (``python -m
bench.generalization.benchmark``) and the studies built on its jobs (thin vessels, threshold transfer, the fit
check's scores, vessel share; the style-gap diagnosis is in ``bench/archive/``)."""
