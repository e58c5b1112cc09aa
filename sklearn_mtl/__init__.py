"""sklearn-mtl: multi-task neural networks with a scikit-learn face."""

__version__ = "0.1.0"
