"""Prediction: the ``Predictor`` (every path from an image to probabilities and labels), its folded fast
path, post-processing, and test-time adaptation around it (``adapt/``)."""
