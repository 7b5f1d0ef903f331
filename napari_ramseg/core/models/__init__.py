"""Model files: the run folder and its file names, ``model.safetensors`` + ``model.json`` (checkpoint),
and napari-ramseg's own BioImage.IO packages read as models."""
