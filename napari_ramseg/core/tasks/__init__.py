"""What a model does with one case: the task registry.

A task (``base.Task``) owns its pre-checks, its prediction path, its measures, how a correction becomes
training samples and the region the review scores look at. ``task_for`` picks the first task in
``TASKS`` that claims a model's labels and the case (a 2D image or a volume); the plain 2D task claims
every 2D image, so it comes last. A new task is one module with a ``Task`` subclass and one line here.
"""

from __future__ import annotations

from ..labels import LabelScheme
from .base import CaseOptions, Task, empty_prediction
from .optic_disc import TASK as OPTIC_DISC
from .plain import TASK as PLAIN
from .volume import TASK as VOLUME

TASKS: tuple[Task, ...] = (
    OPTIC_DISC,  # a disc/cup model: two stages on a colour fundus image; anything else refused
    VOLUME,  # a volume: 2.5D, slice by slice
    PLAIN,  # a 2D image: one pass
)


def task_for(labels: LabelScheme, is_volume: bool = False) -> Task:
    """The task that segments a case (a volume, or a 2D image) with a model of ``labels``."""
    return next(task for task in TASKS if task.claims(labels, is_volume))


__all__ = ["TASKS", "CaseOptions", "Task", "empty_prediction", "task_for"]
