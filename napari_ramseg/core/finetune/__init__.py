"""Fine-tuning on corrections: the corrections store, one round (``round``), what a round learns from and
is scored on (``data``), and a round from files (``job``)."""
