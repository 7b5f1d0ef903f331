"""Benchmarks, studies and the recipes of the shipped models; never shipped. One package per study, each
script run from the repository root as ``python -m bench.<study>.<script>``: common (shared helpers),
recipes (what made the bundled models: bench/recipes/README.md), speed, generalization, adaptation,
optic_disc, finetune, strokes, server, readers, screenshots. bench/results/README.md lists the records and
the commands that wrote them."""
