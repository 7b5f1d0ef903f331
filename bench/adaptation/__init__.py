"""Test-time adaptation on the unseen domain of every leave-one-domain-out model (``python -m
bench.adaptation.benchmark``) and its report (the one-off recovery of older records is in
``bench/archive/``)."""
