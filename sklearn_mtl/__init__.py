"""sklearn-mtl: multi-task neural networks with a scikit-learn face.

One shared PyTorch network with one head per task, regression and
classification mixed, trained with skorch, used like any scikit-learn
estimator.
"""

from ._estimators import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier
from .metrics import make_mean_task_scorer, make_task_scorer, make_task_scorers

__version__ = "0.1.0"

__all__ = [
    "MultiTaskRegressorClassifier",
    "MultiTaskRegressor",
    "MultiTaskClassifier",
    "make_task_scorer",
    "make_task_scorers",
    "make_mean_task_scorer",
    "__version__",
]
