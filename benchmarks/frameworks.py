"""The same two-head network trained the documented way in other libraries.

* skorch: a ``NeuralNet`` whose module returns one output per task and whose
  ``get_loss`` adds the task losses (skorch's documented route for several
  outputs), with skorch's default Dataset and DataLoader.
* Keras 3 on its torch backend: a functional model with one output per task
  and one loss per output, ``model.fit``.

Each runner returns an object with ``outputs(X)``: per task, the prediction
(regression) or the logit (binary), for :func:`_common.final_loss`. A runner
whose library is missing is left out with a message (see ``available``).
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from _common import HEAD, LR, TRUNK, HandNet


def _kinds(Y):
    return ["reg" if c.startswith("reg") else "clf" for c in Y.columns]


# --------------------------------------------------------------------------
# skorch


class _TupleNet(HandNet):
    # skorch's predict/forward concatenate tuple outputs per position.
    def forward(self, x):
        return tuple(super().forward(x))


def skorch_fit(X, Y, batch_size, epochs, seed=0):
    from skorch import NeuralNet
    from skorch.utils import to_tensor

    kinds = _kinds(Y)

    class TwoTaskNet(NeuralNet):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            y_true = to_tensor(y_true, device=self.device)
            loss = 0.0
            for t, (out, kind) in enumerate(zip(y_pred, kinds)):
                target = y_true[:, t:t + 1]
                loss = loss + (F.mse_loss(out, target) if kind == "reg"
                               else F.binary_cross_entropy_with_logits(out, target))
            return loss

    torch.manual_seed(seed)
    net = TwoTaskNet(
        _TupleNet, module__n_features=X.shape[1], module__n_tasks=len(kinds),
        criterion=torch.nn.MSELoss,  # unused: get_loss above is the loss
        optimizer=torch.optim.Adam, lr=LR, batch_size=batch_size, max_epochs=epochs,
        train_split=None, iterator_train__shuffle=True, verbose=0)
    net.fit(X, Y.to_numpy(np.float32))
    return _SkorchModel(net)


class _SkorchModel:
    def __init__(self, net):
        self.net = net

    def outputs(self, X):
        return [o[:, 0].numpy() for o in self.net.forward(X)]


# --------------------------------------------------------------------------
# Keras 3, torch backend


def keras_status():
    """(usable, message)."""
    backend = os.environ.setdefault("KERAS_BACKEND", "torch")
    if backend != "torch":
        return False, f"KERAS_BACKEND={backend!r} is set; this comparison needs 'torch'"
    try:
        import keras
    except ImportError:
        return False, "keras is not installed (pip install keras)"
    if keras.backend.backend() != "torch":
        return False, f"keras runs on {keras.backend.backend()!r}, not torch"
    return True, f"keras {keras.__version__} on torch"


def keras_fit(X, Y, batch_size, epochs, seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((X.shape[1],))
    h = inputs
    for size in TRUNK:
        h = layers.Dense(size, activation="relu")(h)
    outputs, losses = {}, {}
    for name, kind in zip(Y.columns, _kinds(Y)):
        outputs[name] = layers.Dense(1, name=name)(layers.Dense(HEAD, activation="relu")(h))
        losses[name] = ("mse" if kind == "reg"
                        else keras.losses.BinaryCrossentropy(from_logits=True))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(LR), loss=losses)
    targets = {name: Y[name].to_numpy(np.float32) for name in Y.columns}
    model.fit(X, targets, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return _KerasModel(model, list(Y.columns))


class _KerasModel:
    def __init__(self, model, names):
        self.model, self.names = model, names

    def outputs(self, X):
        out = self.model.predict(X, batch_size=8192, verbose=0)
        return [np.asarray(out[name])[:, 0] for name in self.names]


def skorch_status():
    try:
        import skorch
    except ImportError:
        return False, "skorch is not installed"
    return True, f"skorch {skorch.__version__}"
