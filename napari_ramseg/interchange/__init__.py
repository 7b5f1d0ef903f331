"""Models travelling out and in: ONNX export (``onnx_export``), BioImage.IO packages (``bioimageio``,
with the credits in ``citations``) and loading napari-ramseg's own packages without running code
(``package``, called from ``core/models/checkpoint.resolve_model_path``). Nothing here imports Qt or napari.
"""
