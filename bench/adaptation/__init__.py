"""Test-time adaptation on the unseen domain of every leave-one-domain-out model (``python -m
bench.adaptation.benchmark``), its report and the recovery of older records."""
