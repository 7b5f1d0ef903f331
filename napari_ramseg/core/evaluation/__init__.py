"""Scores: metrics, a whole domain evaluated, clinical measures, and the threshold chosen on source
validation."""
