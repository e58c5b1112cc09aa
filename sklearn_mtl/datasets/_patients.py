"""Synthetic patient records with two targets driven by shared risk factors."""

import numbers

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.utils import check_random_state

FEATURE_NAMES = (
    "age",
    "sex",
    "height_cm",
    "weight_kg",
    "bmi",
    "systolic_bp",
    "diastolic_bp",
    "heart_rate",
    "cholesterol",
    "glucose",
    "smoker",
    "exercise_hours",
)
TARGET_NAMES = ("disease", "stay_days")

# Intercept of the risk score, calibrated on 2 * 10**5 draws so that the
# disease prevalence is about 32%.
_RISK_INTERCEPT = -0.75


def _risk_score(age, bmi, sbp, cholesterol, glucose, smoker, exercise):
    """Latent log-odds of disease; see ``make_patient_records`` for the formula."""
    return (
        _RISK_INTERCEPT
        + 0.055 * (age - 55.0)
        + 0.07 * (bmi - 27.0)
        + 0.025 * (sbp - 130.0)
        + 0.45 * (cholesterol - 5.2)
        + 0.30 * (glucose - 5.5)
        + 0.9 * smoker
        - 0.15 * exercise
        # Smoking harms more with age: the effect grows by 0.5 per decade past 50.
        + 0.05 * smoker * (age - 50.0)
        # Threshold: stage-2 hypertension adds a step to the risk.
        + 1.0 * (sbp >= 160.0)
    )


def make_patient_records(n_samples=1000, missing_rate=0.0, random_state=None):
    """Generate synthetic patient records with a classification and a regression target.

    Each row is one adult hospital admission. The features are plausible
    clinical measurements with realistic marginals and correlations; the two
    targets, whether the patient has a (fictitious) cardiometabolic disease
    and how long the stay lasted, are driven by the same latent risk score,
    so a model that shares a representation between them has something to
    share. All features are numeric, so ``X`` can be fed to a neural network
    directly after scaling.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of patients (rows). Must be a positive integer.
    missing_rate : float, default=0.0
        Probability, in ``[0, 1)``, that each target label is missing. Every
        label of every target is dropped independently, so a row can miss
        one target, both, or none. Missing labels are ``NaN``.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for reproducible output (see
        :func:`sklearn.utils.check_random_state`).

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, 12)
        Index: a ``RangeIndex`` named ``"patient_id"``. Columns:

        ============== ======= =================================================
        age            int64   whole years, 18 to 89
        sex            int64   0 = female, 1 = male
        height_cm      float64 cm
        weight_kg      float64 kg
        bmi            float64 kg/m^2, ``weight_kg / (height_cm / 100) ** 2``
        systolic_bp    float64 mmHg
        diastolic_bp   float64 mmHg
        heart_rate     float64 resting, beats per minute
        cholesterol    float64 total cholesterol, mmol/L
        glucose        float64 fasting plasma glucose, mmol/L
        smoker         int64   0 = no, 1 = current smoker
        exercise_hours float64 hours of exercise per week
        ============== ======= =================================================

    Y : pandas.DataFrame of shape (n_samples, 2)
        Same index as ``X``. Columns:

        - ``disease``: binary label, 1 = has the disease. ``int64`` when
          ``missing_rate == 0``; ``float64`` (0.0, 1.0 or ``NaN``) when
          ``missing_rate > 0``, so the dtype depends on the argument, not on
          whether a label happened to be dropped.
        - ``stay_days``: length of the hospital stay in days, a positive
          ``float64`` (``NaN`` where missing).

    Notes
    -----
    The generative model, in order (``N(m, s)`` is a normal draw, every
    continuous feature is clipped to a plausible range and rounded to the
    precision a clinic would record):

    1. Demographics and habits: ``age = 18 + 72 * Beta(2, 1.8)`` (a hospital
       population, skewed old); ``sex ~ Bernoulli(0.5)``;
       ``smoker ~ Bernoulli(sigmoid(-1.3 + 0.3 sex - 0.02 (age - 45)))``
       (about 21%, fewer among the old); ``exercise_hours`` is Gamma with
       shape 1.5 and a mean of 3.5 h a week at age 45 that falls with age
       and smoking (population mean about 3 h).
    2. Body: ``height_cm ~ N(162 + 13 sex - 0.05 (age - 50), 7)``; the BMI is
       lognormal (median about 25.5), higher with age, lower with exercise;
       ``weight_kg = bmi * height_m ** 2``, rounded, and ``bmi`` is then
       recomputed from the recorded weight and height.
    3. Vitals and labs: systolic BP rises with age (about 0.5 mmHg a year),
       BMI, male sex and smoking and falls with exercise (noise sd 12);
       diastolic BP follows systolic BP and BMI (noise sd 6); heart rate falls
       with exercise and rises with smoking and BMI; cholesterol
       (mean about 5.0, noise sd 0.9) rises with age and BMI; glucose is lognormal around
       5.1 mmol/L, rising with BMI and age, plus a diabetic component whose
       probability rises with BMI and age.
    4. Latent risk (log-odds)::

           risk = -0.75 + 0.055 (age - 55) + 0.07 (bmi - 27)
                  + 0.025 (systolic_bp - 130) + 0.45 (cholesterol - 5.2)
                  + 0.30 (glucose - 5.5) + 0.9 smoker - 0.15 exercise_hours
                  + 0.05 smoker (age - 50)          # interaction
                  + 1.0 [systolic_bp >= 160]        # threshold

       ``disease ~ Bernoulli(sigmoid(risk))``, a prevalence of about 32%
       (between 25% and 40% for any reasonable sample size).
    5. Stay: ``log(stay_days) = 1.0 + 0.3 risk + 0.5 disease + N(0, 0.3)``,
       clipped below at 0.25 day (median about 2 days, mean about 3;
       sicker patients stay longer, and the disease itself adds about 65%).

    Both targets are learnable from ``X``: logistic regression reaches about
    0.80 accuracy on ``disease`` (baseline about 0.68), and gradient boosting
    explains well over half the variance of ``stay_days``. The residual
    noise of each target given the features is partly shared (through
    ``disease`` in step 5), which is what multi-task learning can exploit.

    Examples
    --------
    >>> from sklearn_mtl.datasets import make_patient_records
    >>> X, Y = make_patient_records(n_samples=5, missing_rate=0.2, random_state=0)
    >>> X.shape, list(Y.columns)
    ((5, 12), ['disease', 'stay_days'])
    """
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, numbers.Integral):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if isinstance(missing_rate, (bool, np.bool_)) or not isinstance(missing_rate, numbers.Real):
        raise ValueError(f"missing_rate must be a number in [0, 1), got {missing_rate!r}.")
    # The negated test also rejects NaN.
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate!r}.")
    n = int(n_samples)
    rng = check_random_state(random_state)

    # 1. Demographics and habits.
    age = np.floor(18.0 + 72.0 * rng.beta(2.0, 1.8, size=n))  # whole years, 18 to 89
    sex = rng.binomial(1, 0.5, size=n)
    smoker = rng.binomial(1, expit(-1.3 + 0.3 * sex - 0.02 * (age - 45.0)))
    exercise_mean = 3.5 * np.exp(-0.012 * (age - 45.0) - 0.35 * smoker)
    exercise = np.clip(rng.gamma(1.5, exercise_mean / 1.5), 0.0, 25.0).round(1)

    # 2. Body: BMI is drawn first and weight derived from it, so that BMI, not
    # weight, carries the age and exercise effects, as in real populations.
    height = np.clip(rng.normal(162.0 + 13.0 * sex - 0.05 * (age - 50.0), 7.0), 140.0, 205.0)
    height = height.round(1)
    log_bmi = np.log(26.5) + 0.003 * (age - 50.0) - 0.02 * exercise + rng.normal(0.0, 0.16, n)
    bmi_latent = np.clip(np.exp(log_bmi), 16.0, 55.0)
    height_m = height / 100.0
    weight = (bmi_latent * height_m**2).round(1)
    bmi = (weight / height_m**2).round(1)

    # 3. Vitals and labs.
    sbp = (
        100.0 + 0.5 * age + 1.0 * (bmi - 27.0) + 4.0 * sex + 3.0 * smoker
        - 0.8 * exercise + rng.normal(0.0, 12.0, n)
    )
    sbp = np.clip(sbp, 85.0, 220.0).round()
    dbp = 20.0 + 0.42 * sbp + 0.3 * (bmi - 27.0) + rng.normal(0.0, 6.0, n)
    # Keep a physiological pulse pressure of at least 15 mmHg.
    dbp = np.clip(np.minimum(dbp, sbp - 15.0), 40.0, 130.0).round()
    heart_rate = 72.0 - 1.0 * exercise + 4.0 * smoker + 0.3 * (bmi - 27.0) + rng.normal(0.0, 9.0, n)
    heart_rate = np.clip(heart_rate, 40.0, 130.0).round()
    cholesterol = (
        5.2 + 0.012 * (age - 55.0) + 0.04 * (bmi - 27.0) - 0.04 * exercise
        + rng.normal(0.0, 0.9, n)
    )
    cholesterol = np.clip(cholesterol, 2.5, 10.5).round(1)
    log_glucose = np.log(5.1) + 0.008 * (bmi - 27.0) + 0.002 * (age - 55.0)
    glucose = np.exp(log_glucose + rng.normal(0.0, 0.08, n))
    # A diabetic minority gives glucose its long right tail.
    diabetic = rng.binomial(1, expit(-2.6 + 0.12 * (bmi - 27.0) + 0.03 * (age - 55.0)))
    glucose = glucose + diabetic * rng.gamma(2.0, 1.5, n)
    glucose = np.clip(glucose, 3.0, 25.0).round(1)

    # 4. Shared latent risk and the classification target.
    risk = _risk_score(age, bmi, sbp, cholesterol, glucose, smoker, exercise)
    disease = rng.binomial(1, expit(risk))

    # 5. The regression target shares the risk and also depends on the drawn
    # disease, so the two targets' noise is correlated.
    log_stay = 1.0 + 0.3 * risk + 0.5 * disease + rng.normal(0.0, 0.3, n)
    stay_days = np.maximum(np.exp(log_stay), 0.25).round(2)

    index = pd.RangeIndex(n, name="patient_id")
    X = pd.DataFrame(
        {
            "age": age.astype(np.int64),
            "sex": sex.astype(np.int64),
            "height_cm": height,
            "weight_kg": weight,
            "bmi": bmi,
            "systolic_bp": sbp,
            "diastolic_bp": dbp,
            "heart_rate": heart_rate,
            "cholesterol": cholesterol,
            "glucose": glucose,
            "smoker": smoker.astype(np.int64),
            "exercise_hours": exercise,
        },
        index=index,
    )

    if missing_rate > 0:
        # Drawn after everything else so that, for a given seed, X and the
        # observed labels are the same whatever the missing rate.
        disease = disease.astype(np.float64)
        disease[rng.random_sample(n) < missing_rate] = np.nan
        stay_days[rng.random_sample(n) < missing_rate] = np.nan
    else:
        disease = disease.astype(np.int64)
    Y = pd.DataFrame({"disease": disease, "stay_days": stay_days}, index=index)
    return X, Y
