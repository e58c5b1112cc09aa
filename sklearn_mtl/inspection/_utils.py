"""Finding the multi-task estimator inside what the user passed."""

from sklearn.pipeline import Pipeline


def is_multitask(estimator):
    # The private marker every sklearn_mtl estimator class carries.
    return hasattr(type(estimator), "_allowed_kinds") and hasattr(estimator, "get_params")


def final_step(estimator):
    """``(model, prefix)``: the multi-task estimator at the end of ``estimator`` (itself,
    or the last step of a Pipeline, nested Pipelines included) and the ``set_params``
    prefix that reaches it ('' or 'step__')."""
    model, prefix = estimator, ""
    for _ in range(20):
        if is_multitask(model):
            return model, prefix
        if isinstance(model, Pipeline) and model.steps:
            name, model = model.steps[-1]
            prefix += f"{name}__"
            continue
        break
    raise TypeError(
        f"Expected a multi-task estimator (MultiTaskRegressorClassifier, MultiTaskRegressor, "
        f"MultiTaskClassifier) or a Pipeline ending in one; got {type(estimator).__name__}.")


def fitted_final_step(estimator):
    """The fitted multi-task estimator at the end of ``estimator``."""
    from sklearn.utils.validation import check_is_fitted

    model, _ = final_step(estimator)
    check_is_fitted(model)
    return model
