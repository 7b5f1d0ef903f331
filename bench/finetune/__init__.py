"""What corrections buy: fine-tuning gain per ranking (``python -m bench.finetune.gain``, ``.gain_disc``), its
report, and the time of one fine-tune round (``bench.finetune.timing``)."""
