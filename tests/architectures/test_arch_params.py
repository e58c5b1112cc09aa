"""Declared hyperparameter constraints of every architecture, checked once by the resolver."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_mtl.architectures import (
    ARCHITECTURES,
    PLE,
    CrossStitch,
    HardSharing,
    MMoE,
    SoftSharing,
    resolve_architecture,
)
from tests._param_checks import check_declared_constraints


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_parameter_is_declared_and_checked(name):
    check_declared_constraints(ARCHITECTURES[name], resolve_architecture)


@pytest.mark.parametrize("arch, param", [
    (SoftSharing(penalty=float("inf")), "penalty"),
    (SoftSharing(to="Mean"), "to"),
    (CrossStitch(init_self=-1e-9), "init_self"),
    (MMoE(n_experts=2.0), "n_experts"),
    (MMoE(expert_hidden="8"), "expert_hidden"),
    (MMoE(expert_hidden=(4, True)), "expert_hidden"),
    (MMoE(expert_hidden=[4, 2.5]), "expert_hidden"),
    (PLE(n_shared_experts=-1), "n_shared_experts"),
])
def test_invalid_values_name_the_parameter(arch, param):
    with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of "
                                                    f"{type(arch).__name__} must be"):
        resolve_architecture(arch)


@pytest.mark.parametrize("arch", [
    SoftSharing(penalty=0), CrossStitch(init_self=1), MMoE(n_experts=np.int64(1)),
    MMoE(expert_hidden=5), MMoE(expert_hidden=np.array([3, 2])), MMoE(expert_hidden=()),
    PLE(n_shared_experts=0, n_task_experts=2), PLE(n_task_experts=0),
])
def test_valid_values_pass(arch):
    assert resolve_architecture(arch) is arch


def test_build_arguments_from_the_estimator_are_checked_in_build():
    for bad, name in (((0, 3, (4,)), "n_features"), ((5, 2.0, (4,)), "n_tasks"),
                      ((5, 3, "4"), "hidden_layer_sizes"), ((5, 3, (4, 0)), "hidden_layer_sizes")):
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of HardSharing.build"):
            HardSharing().build(*bad, "relu", 0.0)
    module = MMoE(expert_hidden=5).build(4, 2, np.array([3]), "relu", 0.0)
    assert module.out_features == 5
    assert HardSharing().build(4, 2, 3, "relu", 0.0).out_features == 3
