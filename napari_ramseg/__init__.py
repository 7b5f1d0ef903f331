"""napari-ramseg: domain-generalizable medical image segmentation (RAM-DSIR) for napari."""

__version__ = "0.1.0"
