"""The readers against hostile and broken files at volume (``python -m bench.readers.fuzz``)."""
