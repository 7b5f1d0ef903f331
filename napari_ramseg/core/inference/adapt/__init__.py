"""Test-time adaptation to the scan in front of the model, in the method's own Fourier terms.

Methods (``METHODS``, each off unless asked for; ``AdaptConfig.method`` is what a bare ``--adapt`` runs):

- ``align``: training-free, the scan's low-frequency amplitude moved towards the model's stored
  source spectra with RAM's transform (``style.py``);
- ``prompt``: a learned low-frequency amplitude prompt per scan, BatchNorm statistics matched to the
  source ones, the model frozen, warm-started from recent scans (``style.py``);
- ``adabn`` and ``tent``: the BatchNorm baselines, reset for every scan (``batchnorm.py``).

A volume adapts once. ``adapt_and_predict(predictor, image, method)`` is the entry point;
``AdaptedPredictor`` the same as a drop-in ``Predictor`` (``run.py``).
"""

from . import batchnorm, style  # noqa: F401 - registers the methods
from .base import METHODS, Adaptation, Method, method_names, register
from .run import AdaptedPredictor, AdaptReport, adapt_and_predict, make_method

__all__ = ["METHODS", "Adaptation", "AdaptReport", "AdaptedPredictor", "Method", "adapt_and_predict",
           "make_method", "method_names", "register"]
