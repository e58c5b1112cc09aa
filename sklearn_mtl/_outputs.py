"""Answers in the form of the user's Y: predictions, probabilities, classes.

``fit`` records how Y came (:class:`~sklearn_mtl._tasks.TargetFormat`): a
DataFrame, a dict, a 2-D array or a 1-D array. Predictions come back in the
same container with the same task labels (a DataFrame's own column Index,
MultiIndex included); per-task values of the classification tasks
(``classes_``, ``predict_proba``) follow scikit-learn's forms for unnamed
targets and are dicts keyed by task for named ones.
"""

import numpy as np
import pandas as pd


def format_predictions(target_format, names, predictions, index=None):
    """Per-task predictions (dict task -> 1-D array, tasks ``names``) in Y's container."""
    container = target_format.container
    if container == "frame":
        frame = pd.DataFrame({i: predictions[name] for i, name in enumerate(names)},
                             index=index)
        columns = target_format.columns
        if columns is None:
            frame.columns = pd.Index(names, tupleize_cols=False)
        else:  # Y's own labels (MultiIndex included), without the auxiliary tasks
            frame.columns = columns[[target_format.names.index(name) for name in names]]
        return frame
    if container == "dict":
        return {name: predictions[name] for name in names}
    if container == "vector":
        return predictions[names[0]]
    if not names:
        return np.empty((0, 0))
    return np.column_stack([predictions[name] for name in names])


def per_task(target_format, names, values):
    """Per-task values of the classification tasks (dict task -> value) in the form of
    ``classes_`` and ``predict_proba``: one task (1-D y) -> the value itself; a 2-D
    array y -> a list in column order (None for a regression task); a DataFrame or
    dict y -> a dict task -> value."""
    container = target_format.container
    if container == "vector":
        return values[names[0]]
    if container == "array":
        return [values.get(name) for name in names]
    return values


def probability_frames(target_format, probabilities, classes, index=None):
    """``predict_proba(X, as_frame=True)``: each classification task's probabilities as a
    DataFrame (columns: its classes, index: X's or 0..n-1); one DataFrame for a 1-D y,
    else a dict task -> DataFrame."""
    frames = {}
    for name, values in probabilities.items():
        frames[name] = pd.DataFrame(values, index=index,
                                    columns=pd.Index(classes[name], tupleize_cols=False))
    if target_format.container == "vector":
        return next(iter(frames.values()))
    return frames
