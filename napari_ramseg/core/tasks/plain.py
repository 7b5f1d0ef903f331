"""Plain 2D segmentation: a grey or colour image through the network once (the base task as it is)."""

from __future__ import annotations

from .base import Task

TASK = Task()
