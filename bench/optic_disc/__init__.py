"""The optic disc and cup in two stages on whole photographs (``python -m bench.optic_disc.benchmark``), the
gap between the model's ROI and the ground-truth ROI, and vCDR screening."""
