"""``ramseg serve``: the core's per-case pipeline over HTTP, for machines without a GPU.

- ``app.py``: the FastAPI routes (health, models, segment) and ``serve`` (uvicorn, TLS options);
- ``guard.py``: token, size limit and the one log line, around every request;
- ``security.py``: where the token comes from, the constant-time check, loopback-only without a token;
- ``catalog.py``: models by name (bundled and a models folder), never by path; loaded models kept;
- ``cases.py``: an upload through ``core.review.pipeline.segment_case`` to JSON (the mask as PNG/NIfTI bytes);
- ``client.py``: the httpx client; a server out of reach or refusing the token is one line.

Needs the ``[server]`` extra (FastAPI, uvicorn, httpx); the core never imports this package.
"""
