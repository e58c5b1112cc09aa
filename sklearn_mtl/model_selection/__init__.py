"""Hyperparameter searches that train many fits as one stacked network."""

from ._search import STACKED_PARAMS, MultiTaskGridSearchCV, MultiTaskRandomizedSearchCV

__all__ = ["MultiTaskGridSearchCV", "MultiTaskRandomizedSearchCV", "STACKED_PARAMS"]
