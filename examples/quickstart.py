"""
Quickstart: one network for three penguin tasks
===============================================

Species (3 classes), sex (binary, 11 labels missing) and body mass (grams,
regression) from bill and flipper measurements, island and year. The
missing sex labels stay missing: those rows still train the other two tasks.
A small grid search tunes the loss weights; the held-out scores are printed
per task, and the first held-out predictions next to the true labels, under
the rows' own index (the preprocessing outputs pandas, so X's index reaches
the estimator and its predictions keep it).

Run: ``python examples/quickstart.py``
"""

import time

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import load_penguins
from sklearn_mtl.metrics import task_report


def main():
    start = time.perf_counter()
    X, Y = load_penguins()
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=0)

    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]
    preprocess = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         ["island"]),
    ]).set_output(transform="pandas")  # DataFrames, with X's index, down to the estimator
    model = make_pipeline(
        preprocess,
        MultiTaskRegressorClassifier(max_epochs=100, batch_size=32, lr=5e-3, alpha=1e-4,
                                     random_state=0),
    )

    # Tune how much sex counts against the other two tasks.
    grid = {"multitaskregressorclassifier__loss_weights__sex": [0.5, 1.0, 2.0]}
    search = GridSearchCV(model, grid, cv=KFold(3, shuffle=True, random_state=0))
    search.fit(X_train, Y_train)

    best = search.best_estimator_
    print("best loss weights:", {k.split("__")[-1]: v for k, v in search.best_params_.items()})
    print(f"cross-validated mean score: {search.best_score_:.3f}\n")

    scores = best[-1].score_tasks(best[:-1].transform(X_test), Y_test)
    metrics = {"species": "accuracy", "sex": "accuracy (observed labels)", "body_mass_g": "R²"}
    table = pd.DataFrame({
        "metric": [metrics[t] for t in scores],
        "held-out score": [round(s, 3) for s in scores.values()],
    }, index=pd.Index(list(scores), name="task"))
    print(table.to_string())
    print("\nper-task report (held-out rows, observed labels only):")
    print(task_report(best, X_test, Y_test).round(3).dropna(axis=1, how="all").to_string())
    print("\nfirst predictions (true labels beside them, same row index):")
    first = X_test.head()
    predicted = best.predict(first).add_suffix("_pred")
    print(pd.concat([Y_test.loc[first.index], predicted], axis=1).to_string())
    print(f"\ntotal time: {time.perf_counter() - start:.1f} s")
    return scores


if __name__ == "__main__":
    main()
