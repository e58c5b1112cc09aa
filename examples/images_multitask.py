"""
Your own trunk: a small CNN on scikit-learn's 8x8 digits, two tasks on top
==========================================================================

The trunk is any ``torch.nn.Module`` mapping X (here flattened 8x8 images)
to a representation; the heads, losses, loss weights and scikit-learn face
stay as they are. Tasks: the digit (10 classes) and the amount of ink in the
image (regression), plus "is the digit even" as an auxiliary task: trained to
shape the trunk, never predicted.

Run: ``python examples/images_multitask.py``
"""

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier


class DigitCNN(torch.nn.Module):
    """Two conv layers on the 8x8 image, then a 64-wide representation."""

    def __init__(self, width=64):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, width), torch.nn.ReLU(),
        )
        self.out_features = width

    def forward(self, X):
        return self.features(X.view(-1, 1, 8, 8))


def main():
    digits = load_digits(as_frame=True)
    X = digits.data  # a DataFrame: one row per image, its index the image number
    Y = pd.DataFrame({
        "digit": digits.target,
        "ink": X.sum(axis=1) / 16.0,  # lit pixels, in full-pixel units
        "even": np.where(digits.target % 2 == 0, "even", "odd"),
    }, index=X.index)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.3, random_state=0)

    model = make_pipeline(
        StandardScaler().set_output(transform="pandas"),  # keeps the image numbers
        MultiTaskRegressorClassifier(module=DigitCNN(), auxiliary_tasks=["even"],
                                     loss_weights={"even": 0.5}, max_epochs=15, lr=2e-3,
                                     random_state=0),
    )
    model.fit(X_train, Y_train)
    estimator = model[-1]
    scores = estimator.score_tasks(model[0].transform(X_test), Y_test)
    print("held-out scores:", {task: round(score, 3) for task, score in scores.items()})
    first = X_test.head(3)
    predicted = model.predict(first).add_suffix("_pred")  # no 'even' column: auxiliary
    print("\nfirst held-out images (no 'even' prediction: it is auxiliary):")
    print(pd.concat([Y_test.loc[first.index, ["digit", "ink"]], predicted], axis=1)
          .round(2).to_string())


if __name__ == "__main__":
    main()
