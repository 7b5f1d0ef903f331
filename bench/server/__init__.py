"""A ramseg server under load: many clients against one server (``python -m bench.server.load``)."""
