"""The README's and the results' screenshots: every dock in use under Xvfb (``xvfb-run -a python -m
bench.screenshots.<name>``); the pictures land in bench/results/screenshots/."""
