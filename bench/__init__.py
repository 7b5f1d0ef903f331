"""Benchmarks, studies and the recipes of the shipped models; never shipped. Run from the repository root as
``python -m bench.<study>.<script>`` (bench/recipes/README.md for the recipes, bench/results/README.md for the
records). Scripts still flat in bench/ run as ``python bench/<script>.py`` until they move."""
