"""Hard parameter sharing: one trunk read by every task head."""

from .._modules import MLPTrunk
from ._base import Architecture


class HardSharing(Architecture):
    """Hard parameter sharing (the default architecture).

    Every task reads the same representation, produced by one MLP trunk
    (Caruana, "Multitask Learning", Machine Learning 28, 1997). Only the heads
    are task-specific.

    This class has no hyperparameters of its own: the estimator's
    ``hidden_layer_sizes``, ``activation`` and ``dropout`` are the trunk's.
    With empty ``hidden_layer_sizes`` the trunk is the identity and the heads
    read the input features directly.

    The built module (:class:`sklearn_mtl._modules.MLPTrunk`) returns a shared
    representation (B, D) with D the last hidden size (``per_task=False``).
    """

    _parameter_constraints: dict = {}

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        n_features, _, sizes = self._check_build_args(n_features, n_tasks, hidden_layer_sizes)
        return MLPTrunk(n_features, sizes, activation, dropout)
