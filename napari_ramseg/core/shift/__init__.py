"""Domain shift, measured: what a model's source domains look like (``source_profile``, the block
``model.json`` records) and whether a scan looks like them (``domain_fit``). Adapting to a scan that
does not is a prediction path: ``core/inference/adapt/``."""
