"""What every study shares: the machine a figure came from (``machine``), atomic JSON-safe result files
(``results_io``) and the research data sets prepared as task folders (``tasks``)."""
