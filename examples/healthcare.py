"""
Disease risk (binary) and length of stay (days) from one network
================================================================

The classic two-head network: shared layers 64 and 64, each head one hidden
layer of 20 and its output. A fifth of the labels of each target are
missing; each task learns from the rows where it has a label.

Run: ``python examples/healthcare.py``
"""

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, mean_absolute_error, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import make_patient_records


def main():
    X, Y = make_patient_records(n_samples=5000, missing_rate=0.2, random_state=0)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=0)

    # pandas output keeps the patient ids, so predictions line up with Y_test.
    model = make_pipeline(
        StandardScaler().set_output(transform="pandas"),
        MultiTaskRegressorClassifier(
            hidden_layer_sizes=(64, 64), head_hidden_sizes=(20,),
            loss_weights={"disease": 1.0, "stay_days": 0.5},
            max_epochs=200, early_stopping=True, patience=10, random_state=0,
        ),
    )
    model.fit(X_train, Y_train)
    net = model[-1].net_
    print(f"trained {len(net.history)} epochs (early stopping on 10% of the training rows)")

    pred = model.predict(X_test)
    risk = model.predict_proba(X_test)["disease"][:, 1]
    has_disease = Y_test["disease"].notna()
    has_stay = Y_test["stay_days"].notna()
    y_disease = Y_test.loc[has_disease, "disease"]
    print(f"disease accuracy: {accuracy_score(y_disease, pred.loc[has_disease, 'disease']):.3f} "
          f"(majority class: {max(y_disease.mean(), 1 - y_disease.mean()):.3f})")
    print(f"disease ROC AUC:  {roc_auc_score(y_disease, risk[has_disease.to_numpy()]):.3f}")
    y_stay = Y_test.loc[has_stay, "stay_days"]
    mae = mean_absolute_error(y_stay, pred.loc[has_stay, "stay_days"])
    baseline = mean_absolute_error(y_stay, np.full(len(y_stay), Y_train["stay_days"].median()))
    print(f"stay MAE:         {mae:.2f} days (predicting the median: {baseline:.2f} days)")

    # Predictions and probabilities keep X's index (patient_id): they sit beside Y_test.
    first = X_test.head()
    risk_table = model.predict_proba(first, as_frame=True)["disease"].add_prefix("P(disease=")
    print("\nfirst held-out patients:")
    print(pd.concat([Y_test.loc[first.index], model.predict(first).add_suffix("_pred"),
                     risk_table.add_suffix(")")], axis=1).round(2).to_string())


if __name__ == "__main__":
    main()
