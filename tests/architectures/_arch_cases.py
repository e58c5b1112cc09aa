"""Configured instances shared by the architecture tests."""

import pytest

from sklearn_mtl.architectures import CrossStitch, HardSharing, MMoE, PLE, SoftSharing

#: One configured instance of every architecture, with its expected ``per_task``.
ALL_ARCHITECTURES = [
    pytest.param(HardSharing(), False, id="hard"),
    pytest.param(SoftSharing(penalty=0.1), True, id="soft"),
    pytest.param(SoftSharing(penalty=0.1, to="pairwise"), True, id="soft-pairwise"),
    pytest.param(CrossStitch(init_self=0.8), True, id="cross_stitch"),
    pytest.param(MMoE(n_experts=3), True, id="mmoe"),
    pytest.param(MMoE(n_experts=2, expert_hidden=(5,)), True, id="mmoe-expert_hidden"),
    pytest.param(PLE(), True, id="cgc"),
    pytest.param(PLE(n_shared_experts=1, n_task_experts=2, n_levels=2), True, id="ple-2"),
    pytest.param(PLE(n_shared_experts=0, n_task_experts=1, n_levels=2), True, id="ple-no-shared"),
]
