"""Inspecting multi-task fits: does multi-task learning help, which tasks help each
other, and how training went.

* :func:`compare_single_task`: cross-validated multi-task vs one-network-per-task
  scores, per task, with an interval and a verdict;
* :func:`task_affinity`: the inter-task affinity (TAG lookahead or gradient
  cosine) recorded during a fit, and :func:`suggest_task_groups` to group tasks
  by it;
* displays in scikit-learn's style: :class:`TrainingHistoryDisplay`,
  :class:`TaskAffinityDisplay`, :class:`SingleTaskComparisonDisplay`
  (matplotlib needed to plot only).

The recording itself is a skorch callback,
:class:`sklearn_mtl.callbacks.TaskAffinity`, usable in any fit.
"""

from ._affinity import suggest_task_groups, task_affinity
from ._compare import compare_single_task
from ._displays import SingleTaskComparisonDisplay, TaskAffinityDisplay, TrainingHistoryDisplay

__all__ = [
    "SingleTaskComparisonDisplay",
    "TaskAffinityDisplay",
    "TrainingHistoryDisplay",
    "compare_single_task",
    "suggest_task_groups",
    "task_affinity",
]
