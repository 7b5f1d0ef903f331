"""``python -m napari_ramseg`` is the ``ramseg`` command (torchrun launches it this way too)."""

import sys

from .cli import main

sys.exit(main())
