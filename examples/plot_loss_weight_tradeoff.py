"""
How much should a task count? Scores against its loss weight
============================================================

The training loss of a multi-task network is ``sum_t w_t * L_t``. Raising
one task's weight ``w_t`` pulls the shared layers towards that task, at some
cost to the others, or to none when the tasks share what they need. Where
the balance lies is an empirical question, and ``GridSearchCV`` answers it
as for any hyperparameter: here over the weight of the length-of-stay task,
with one scorer per task, on synthetic patient records with a fifth of the
labels missing.

Run: ``python examples/plot_loss_weight_tradeoff.py`` (about half a minute on two cores)
"""

# %%
# Data and model
# --------------
# Two tasks driven by the same latent risk: whether a patient has the
# disease (binary) and how many days the stay lasts (regression). Missing
# labels stay missing; each task learns from the rows where it has one.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier, make_task_scorers
from sklearn_mtl.datasets import make_patient_records

X, Y = make_patient_records(n_samples=1200, missing_rate=0.2, random_state=0)
model = make_pipeline(
    StandardScaler(),
    MultiTaskRegressorClassifier(hidden_layer_sizes=(32, 32), max_epochs=20, lr=3e-3,
                                 random_state=0),
)
print(Y.head())

# %%
# One scorer per task
# -------------------
# ``make_task_scorers`` gives a dict of scorers, one per task, each skipping
# the rows where its task has no label. With a dict ``scoring``, the search
# reports ``mean_test_<task>`` for every task; ``refit=False`` keeps it to
# the cross-validation.
scoring = make_task_scorers(model, Y, metrics={"disease": "roc_auc",
                                                "stay_days": "neg_mean_absolute_error"})
weights = np.logspace(-2, 1, 5)  # 0.01 ... 10; the disease weight stays 1
search = GridSearchCV(
    model,
    {"multitaskregressorclassifier__loss_weights__stay_days": weights},
    scoring=scoring, refit=False, cv=KFold(3, shuffle=True, random_state=0),
)
search.fit(X, Y)

results = pd.DataFrame(search.cv_results_)
table = pd.DataFrame({
    "stay_days weight": weights,
    "disease ROC AUC": results["mean_test_disease"],
    "stay MAE (days)": -results["mean_test_stay_days"],
})
print(table.round(3).to_string(index=False))

# %%
# The trade-off
# -------------
# Each task's cross-validated score against the weight of the length-of-stay
# loss (the bars: one standard deviation over the folds). A weight near 0
# trains the stay head on a representation shaped by the disease task alone;
# a large weight lets the stay task dominate the shared layers. Both targets
# come from one latent risk score here, so the stay labels also carry
# information about the disease: the left panel shows whether giving them
# more weight helps or hurts the disease task.
fig, (ax_auc, ax_mae) = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
ax_auc.errorbar(weights, results["mean_test_disease"], yerr=results["std_test_disease"],
                marker="o", capsize=3, color="tab:blue")
ax_auc.set(xscale="log", xlabel="loss weight of stay_days", ylabel="ROC AUC",
           title="disease (higher is better)")
ax_mae.errorbar(weights, -results["mean_test_stay_days"], yerr=results["std_test_stay_days"],
                marker="o", capsize=3, color="tab:orange")
ax_mae.set(xscale="log", xlabel="loss weight of stay_days", ylabel="MAE (days)",
           title="stay_days (lower is better)")
fig.suptitle("3-fold cross-validated scores per task")
fig.tight_layout()
plt.show()

# %%
# Choosing
# --------
# ``refit`` names the task whose score picks the winner. To weigh both, rank
# the candidates yourself from ``cv_results_``, or score with
# ``make_mean_task_scorer`` for one number per candidate (the mean over tasks
# of each task's score, added as they are: choose metrics on comparable
# scales).
best = results.loc[results["rank_test_disease"].idxmin(),
                   "param_multitaskregressorclassifier__loss_weights__stay_days"]
print(f"best weight of stay_days for the disease ROC AUC: {best:.3g}")
