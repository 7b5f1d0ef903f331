"""The recipes that made the bundled models, and the choosers whose settings are written into
``napari_ramseg/bundled_models/*/model.json`` (README.md here says which command made which file)."""
