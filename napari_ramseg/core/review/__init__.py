"""The clinician's side of a case: segmenting one (``pipeline.segment_case``), which cases to look at
first (``priority``), ``report.csv``, a folder's worklist, and masks that follow strokes (``refine``)."""
