"""Correct with a few strokes (issue 30): the simulated clinician's cases (``cases``), the benchmark of the
refinements (``benchmark``, its table and plot in ``report``) and what stroke-refined scans buy a fine-tune
round (``finetune``); run as ``python -m bench.strokes.<name>`` from the repository root. Results in
bench/results/strokes/."""
