"""The napari side: the reader and writers, the sample, the layer keys, the docks and the demo.

The core and the server never import it (the import-linter contracts in pyproject.toml)."""
