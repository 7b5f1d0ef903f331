"""Data: dataset folders and their layouts, samples and splits, channels and normalisation, the working
scale, photometric augmentation. Imports only the base modules of ``core/``."""
