"""Training: the loop (``trainer``), its state and resume files, a request run as a job (``job``) or in a
child process for the dock (``process``), stopping on signals, torchrun / DDP."""
