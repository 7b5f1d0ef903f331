"""The RAM-DSIR method: the network, random amplitude mixup, the losses and the whole objective, and the
domain-balanced batches it trains on."""
