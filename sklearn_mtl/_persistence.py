"""The fitted estimators' state as plain data: one path for pickle, joblib and skops.

``__getstate__`` (:func:`estimator_state`) replaces each fitted object that is
not plain data by a record made of Python builtins and numpy arrays:

* ``net_`` (the skorch net: torch modules, optimizer, callbacks, history) by a
  *net record* (see :func:`net_record`): the parameters the net was built
  with, the weights and buffers of each of its torch modules as numpy arrays,
  the optimizer's state with its tensors as numpy arrays, the states of the
  weighting strategy's random generators, the training history as lists and
  dicts, what callbacks recorded (those with ``plain_state()`` /
  ``load_plain_state(state)``, e.g. :class:`~.callbacks.TaskAffinity`), and
  the device it was trained on;
* the second network of ``retrieval='auto'``, where a model has one, the same way
  (the retrieval features' state, training rows and label arrays, is plain data
  already);
* ``tasks_``, ``task_params_`` and ``target_format_`` (dataclasses holding
  scikit-learn encoders, numpy dtypes, dicts keyed by task labels, a pandas
  column Index) by lists of their fields: dicts become lists of pairs (a
  task label may be a tuple), dtypes their string, an Index its values,
  dtype and names.

Parameters that are dicts keyed by tuples (task labels of a MultiIndex Y)
become lists of pairs too, and an ordinary ``module=`` instance (a tree of
``nn.Module`` without hooks or pickling of its own) becomes its classes and
``__dict__`` with arrays for tensors, what pickling it would store.

``__setstate__`` (:func:`split_state`, :func:`attach_net`) rebuilds the
parameters and dataclasses, then the net with the package's own builders
(:func:`._build.build_net` and :func:`._build.initialize`, in a forked torch
RNG so that loading draws nothing from the caller's random stream), and loads
the arrays into it. A model trained on CUDA loads on the CPU, with a warning,
where CUDA is absent.

What cannot be plain data is code the user gave: a ``module=`` class, loss
callables, an optimizer class, skorch callbacks, a module with hooks. They
are saved as they are (by reference, or torch's own pickling), and skops
lists their types as untrusted. Nothing else in the state is of a type
outside builtins, numpy, scikit-learn and this package.
"""

import dataclasses
import types
import warnings

import numpy as np
import pandas as pd
import torch
from skorch.history import History

from ._build import build_net, initialize
from ._net import MultiTaskNet
from ._retrieval import n_retrieval_features
from ._task_params import TaskParams
from ._tasks import Task, TargetFormat

#: Version of the net record; bumped when its layout changes.
NET_FORMAT = 1
# Rows of zeros a user trunk is trial-run on while the net is rebuilt.
_REBUILD_ROWS = 3
_DATACLASSES = {cls.__name__: cls for cls in (Task, TaskParams, TargetFormat)}
# Fitted attributes holding a net: the model's, and the network of retrieval='auto'.
_NETS = ("net_", "_retrieval_net")
# Fitted attributes holding dataclasses: one instance, or a list of them.
_RECORDED = {"tasks_": list, "task_params_": None, "target_format_": None}
# The tag of an array that stands for a tensor numpy has no dtype for (bfloat16...).
_TENSOR_TAG = "__torch_tensor__"


# ---------------------------------------------------------------------------
# Tensors and nested containers


def tensor_to_array(tensor):
    """A tensor as a numpy array (a copy, on the host); dtypes numpy lacks are stored
    as float32 values with their torch dtype's name."""
    tensor = tensor.detach().to("cpu", copy=True)
    try:
        return tensor.numpy()
    except TypeError:  # bfloat16, float8...
        return {_TENSOR_TAG: str(tensor.dtype).removeprefix("torch."),
                "values": tensor.float().numpy()}


def array_to_tensor(value):
    """The inverse of :func:`tensor_to_array` (always a fresh, writable tensor: the
    array may be a read-only memory map)."""
    if isinstance(value, dict):
        return torch.from_numpy(np.array(value["values"])).to(getattr(torch, value[_TENSOR_TAG]))
    return torch.from_numpy(np.array(value))


def _is_tagged(value):
    return isinstance(value, dict) and _TENSOR_TAG in value


def _plain_tree(value):
    """Tensors -> arrays and numpy scalars -> Python scalars, inside dicts, lists, tuples
    (list subclasses, e.g. skorch's History, become lists)."""
    if isinstance(value, torch.Tensor):
        return tensor_to_array(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain_tree(v) for k, v in value.items()}
    if type(value) is tuple:
        return tuple(_plain_tree(v) for v in value)
    if isinstance(value, list):
        return [_plain_tree(v) for v in value]
    return value


def _tensor_tree(value):
    """Arrays -> tensors inside dicts, lists, tuples (the inverse for optimizer states)."""
    if isinstance(value, np.ndarray) or _is_tagged(value):
        return array_to_tensor(value)
    if isinstance(value, dict):
        return {k: _tensor_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensor_tree(v) for v in value)
    return value


def module_arrays(module):
    """A torch module's state dict as a dict name -> numpy array."""
    return {name: tensor_to_array(t) for name, t in module.state_dict().items()}


# ---------------------------------------------------------------------------
# A user's torch module (the module= parameter)

_HOOKS = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks",
          "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
          "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
          "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _is_plain_module(module):
    """Whether ``module`` (and every submodule) is an ordinary nn.Module: its state is
    its ``__dict__`` (torch's default pickling), without hooks, compiled calls or tensor
    subclasses, so that :func:`module_record` captures all of it. (A class's own
    ``__setstate__``, e.g. the convolutions', is what loading calls, as pickle does.)"""
    for m in module.modules():
        cls = type(m)
        if (isinstance(m, torch.jit.ScriptModule)
                or cls.__getstate__ is not torch.nn.Module.__getstate__
                or cls.__reduce_ex__ is not object.__reduce_ex__
                or cls.__reduce__ is not object.__reduce__
                or m.__dict__.get("_compiled_call_impl") is not None
                or any(m.__dict__.get(name) for name in _HOOKS)
                or any(p is not None and type(p) is not torch.nn.Parameter
                       for p in m._parameters.values())
                or any(b is not None and type(b) is not torch.Tensor
                       for b in m._buffers.values())
                or any(isinstance(v, torch.Tensor) for k, v in vars(m).items()
                       if k not in ("_parameters", "_buffers"))):
            return False
    return True


def module_record(module):
    """An ordinary torch module as ``{"torch_module": its class, "attributes": ...}``,
    its parameters and buffers numpy arrays: what pickling it stores, with arrays for
    tensors. skops lists the module classes as types to trust."""
    attributes = {}
    for name, value in vars(module).items():
        if name == "_compiled_call_impl":
            continue  # None (checked), and left out of torch's own pickles
        if name == "_parameters":
            value = {k: None if p is None else {"values": tensor_to_array(p),
                                                "requires_grad": p.requires_grad}
                     for k, p in value.items()}
        elif name == "_buffers":
            value = {k: None if b is None else tensor_to_array(b) for k, b in value.items()}
        elif name == "_modules":
            value = {k: None if m is None else module_record(m) for k, m in value.items()}
        elif name == "_non_persistent_buffers_set":
            value = sorted(value)
        attributes[name] = value
    return {"torch_module": type(module), "attributes": attributes}


def _is_module_record(value):
    return isinstance(value, dict) and "torch_module" in value and "attributes" in value


def module_from_record(record):
    attributes = dict(record["attributes"])
    attributes["_parameters"] = {
        k: None if p is None else torch.nn.Parameter(array_to_tensor(p["values"]),
                                                     requires_grad=p["requires_grad"])
        for k, p in attributes.get("_parameters", {}).items()}
    attributes["_buffers"] = {k: None if b is None else array_to_tensor(b)
                              for k, b in attributes.get("_buffers", {}).items()}
    attributes["_modules"] = {k: None if m is None else module_from_record(m)
                              for k, m in attributes.get("_modules", {}).items()}
    attributes["_non_persistent_buffers_set"] = set(
        attributes.get("_non_persistent_buffers_set", ()))
    cls = record["torch_module"]
    module = cls.__new__(cls)
    module.__setstate__(attributes)  # the class's own, as unpickling calls it
    return module


# ---------------------------------------------------------------------------
# pandas Index


def index_record(index):
    """A pandas Index (MultiIndex included) as plain data, or None when the plain form
    would not rebuild it exactly (e.g. datetime or categorical labels)."""
    if isinstance(index, pd.MultiIndex):
        levels = [index_record(level) for level in index.levels]
        if any(level is None for level in levels):
            return None
        record = {"levels": levels, "codes": [np.asarray(c, dtype=np.int64)
                                              for c in index.codes],
                  "names": list(index.names)}
    else:
        record = {"values": index.tolist(), "dtype": str(index.dtype), "name": index.name}
    try:
        rebuilt = index_from_record(record)
    except (TypeError, ValueError):
        return None
    same = (type(rebuilt) is type(index) and rebuilt.equals(index)
            and list(rebuilt.names) == list(index.names)
            and (isinstance(index, pd.MultiIndex) or rebuilt.dtype == index.dtype))
    return record if same else None


def index_from_record(record):
    if "levels" in record:
        return pd.MultiIndex(levels=[index_from_record(level) for level in record["levels"]],
                             codes=record["codes"], names=record["names"])
    return pd.Index(record["values"], dtype=record["dtype"], name=record["name"],
                    tupleize_cols=False)


# ---------------------------------------------------------------------------
# Dicts keyed by task labels (parameters such as loss_weights={("body", "mass"): 2})

# The key of the record of a dict with keys skops cannot store (tuples...).
_PAIRS_TAG = "__sklearn_mtl_dict_items__"
_PLAIN_KEYS = (str, int, float, bool, type(None))


def keyed_record(value):
    """``value`` with every dict whose keys are not all str/int/float/bool/None (a
    MultiIndex column label is a tuple) replaced by ``{_PAIRS_TAG: [[key, value]...]}``."""
    if isinstance(value, dict) and type(value) is dict:
        items = {k: keyed_record(v) for k, v in value.items()}
        if all(isinstance(k, _PLAIN_KEYS) for k in items):
            return items
        return {_PAIRS_TAG: [[k, v] for k, v in items.items()]}
    return value


def keyed_from_record(value):
    if isinstance(value, dict) and type(value) is dict:
        if set(value) == {_PAIRS_TAG}:
            return {k: keyed_from_record(v) for k, v in value[_PAIRS_TAG]}
        return {k: keyed_from_record(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
# Dataclasses (Task, TaskParams, TargetFormat)


def _field_record(value):
    """One dataclass field as ``[tag, plain value]``."""
    if isinstance(value, dict):
        # Task labels (the keys) may be tuples, which skops does not take as keys.
        return ["dict", [[key, item] for key, item in value.items()]]
    if isinstance(value, frozenset):
        return ["frozenset", list(value)]
    if isinstance(value, np.dtype):
        return ["dtype", value.str]
    if isinstance(value, pd.Index):
        record = index_record(value)
        if record is not None:
            return ["index", record]
    return ["value", value]


def _field_value(tag, value):
    if tag == "dict":
        return {key: item for key, item in value}
    if tag == "frozenset":
        return frozenset(value)
    if tag == "dtype":
        return np.dtype(value)
    if tag == "index":
        return index_from_record(value)
    return value


def dataclass_record(obj):
    """A Task, TaskParams or TargetFormat as ``{"dataclass": name, "fields": [...]}``."""
    return {"dataclass": type(obj).__name__,
            "fields": [[f.name, *_field_record(getattr(obj, f.name))]
                       for f in dataclasses.fields(obj)]}


def _is_record(value):
    return isinstance(value, dict) and "dataclass" in value and "fields" in value


def dataclass_from_record(record):
    cls = _DATACLASSES[record["dataclass"]]
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: _field_value(tag, value) for name, tag, value in record["fields"]
                  if name in known})


# ---------------------------------------------------------------------------
# The net


def net_record(net):
    """The plain-data record of a fitted :class:`~._net.MultiTaskNet`."""
    weighting = net.weighting_
    generators = {name: tensor_to_array(value.get_state())
                  for name, value in vars(weighting).items()
                  if isinstance(value, torch.Generator)}
    return {
        "format": NET_FORMAT,
        "device": str(net.device),
        "build_params": dict(net.build_params),
        "lr": net.lr,
        "static_weights": np.asarray(net.static_weights, dtype=np.float64),
        "iterator_seed": net.get_params_for("iterator_train").get("seed"),
        # Every torch module skorch registered (the network, the weighting
        # strategy's state, the loss scales, the criterion).
        "modules": {name: module_arrays(getattr(net, name + "_"))
                    for name in list(net._modules) + list(net._criteria)},
        "optimizers": {name: _plain_tree(getattr(net, name + "_").state_dict())
                       for name in net._optimizers},
        "generators": generators,
        "history": _plain_tree(list(net.history)),
        # What callbacks recorded (e.g. TaskAffinity's sums), for those that say it as
        # plain data, and the step count of the step hooks.
        "callback_states": {name: _plain_tree(cb.plain_state())
                            for name, cb in net.callbacks_
                            if callable(getattr(cb, "plain_state", None))},
        "train_steps": int(net.__dict__.get("_train_steps", 0)),
        # Each task's best-epoch weights (early stopping): distinct copies and, per
        # task, the index of its copy.
        "task_snapshots": net.snapshot_record(tensor_to_array),
    }


def _load_device(device):
    """Where to rebuild a net trained on ``device``: there when it exists here, else
    the CPU, with a warning."""
    parsed = torch.device(device)
    if parsed.type != "cuda":
        return "cpu"
    index = parsed.index or 0
    if torch.cuda.is_available() and index < torch.cuda.device_count():
        return device
    warnings.warn(
        f"This model was trained on {device!r}, which is not available on this machine; it "
        "is loaded on the CPU. Set device='cpu' (set_params) before training it further.",
        UserWarning, stacklevel=4)
    return "cpu"


def rebuild_net(estimator, record, width=None, callbacks="estimator"):
    """A :class:`~._net.MultiTaskNet` rebuilt from its record for a (restored) estimator.

    ``width``: the number of input columns the network reads (None: the estimator's
    ``n_features_in_``); ``callbacks``: the user callbacks it was built with (by
    default the estimator's)."""
    if record.get("format") != NET_FORMAT:
        raise ValueError(
            f"This model was saved with net record format {record.get('format')!r}; this "
            f"version of sklearn-mtl reads format {NET_FORMAT}. Load it with the version it "
            "was saved with, or refit it.")
    device = _load_device(record["device"])
    # The parameters the net was built with; module and callbacks are the
    # estimator's own (the user's objects, saved as they are).
    build = types.SimpleNamespace(
        **record["build_params"], module=estimator.module,
        callbacks=estimator.callbacks if callbacks == "estimator" else callbacks)
    build.lr = record["lr"]  # continued training may have changed it
    params = dataclasses.replace(estimator.task_params_,
                                 weights=np.asarray(record["static_weights"]))
    X = np.zeros((_REBUILD_ROWS, estimator.n_features_in_ if width is None else width),
                 dtype=np.float32)
    seed = record["iterator_seed"]
    cuda = [torch.device(device).index or 0] if device != "cpu" else []
    # The fresh initial weights are overwritten below: drawing them must not move
    # the caller's RNG.
    with torch.random.fork_rng(devices=cuda):
        net = build_net(build, estimator.tasks_, params, X, device,
                        [0, 0, 0 if seed is None else int(seed)])
        initialize(net, build)
    _load_states(net, record, estimator)
    net.history_ = History(record["history"])
    states = record.get("callback_states", {})
    for name, cb in net.callbacks_:
        if name in states and callable(getattr(cb, "load_plain_state", None)):
            cb.load_plain_state(states[name])
    net.__dict__["_train_steps"] = int(record.get("train_steps", 0))
    net.load_snapshot_record(record.get("task_snapshots"), array_to_tensor)
    return net


def _name_of(module):
    return module.__name__ if isinstance(module, type) else type(module).__name__


def _load_states(net, record, estimator):
    for name, arrays in record["modules"].items():
        module = getattr(net, name + "_")
        state = {key: array_to_tensor(value) for key, value in arrays.items()}
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            what = f"net_.{name}_"
            if name == "module" and estimator.module is not None:
                what = f"module={_name_of(estimator.module)}"
            raise ValueError(
                f"The saved weights of {what} do not fit the network rebuilt from the "
                f"estimator's parameters (were they changed after fitting?): {exc}") from None
    for name, state in record["optimizers"].items():
        getattr(net, name + "_").load_state_dict(_tensor_tree(state))
    for name, state in record["generators"].items():
        generator = getattr(net.weighting_, name, None)
        if isinstance(generator, torch.Generator):
            generator.set_state(array_to_tensor(state))


# ---------------------------------------------------------------------------
# The estimator


def estimator_state(state, param_names=()):
    """``state`` (a copy of a fitted estimator's ``__dict__``) with its fitted objects
    replaced by plain-data records, and its dict parameters (``param_names``) keyed
    plainly; the objects themselves are not modified."""
    state = dict(state)
    for name in param_names:
        if type(state.get(name)) is dict:
            state[name] = keyed_record(state[name])
    module = state.get("module")
    if isinstance(module, torch.nn.Module) and _is_plain_module(module):
        state["module"] = module_record(module)
    for name in _NETS:
        if isinstance(state.get(name), MultiTaskNet):
            state[name] = net_record(state[name])
    for name, container in _RECORDED.items():
        value = state.get(name)
        if container is list and isinstance(value, list):
            state[name] = [dataclass_record(v) if dataclasses.is_dataclass(v) else v
                           for v in value]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            state[name] = dataclass_record(value)
    return state


def split_state(state, param_names=()):
    """``(state, net)`` from :func:`estimator_state`'s output: the parameters and the
    dataclasses rebuilt, and the net record (or a net saved before records existed,
    or None) taken out. The net is attached by :func:`attach_net` once the rest of
    the state is set."""
    state = dict(state)
    for name in param_names:
        if type(state.get(name)) is dict:
            state[name] = keyed_from_record(state[name])
    if _is_module_record(state.get("module")):
        state["module"] = module_from_record(state["module"])
    for name, container in _RECORDED.items():
        value = state.get(name)
        if container is list and isinstance(value, list):
            state[name] = [dataclass_from_record(v) if _is_record(v) else v for v in value]
        elif _is_record(value):
            state[name] = dataclass_from_record(value)
    return state, state.pop("net_", None)


def attach_net(estimator, net):
    """Set ``estimator.net_`` from what :func:`split_state` took out, and rebuild the
    network of ``retrieval='auto'`` where the state holds its record."""
    if net is None:
        return  # not fitted
    retrieval = estimator.__dict__.get("_retrieval")
    partner = estimator.__dict__.get("_retrieval_net")
    wide = estimator.n_features_in_ + (0 if retrieval is None else n_retrieval_features(retrieval))
    if isinstance(partner, dict) and "modules" in partner:
        estimator._retrieval_net = rebuild_net(estimator, partner, width=wide, callbacks=None)
    # net_ reads the retrieval features itself unless the other network does.
    width = estimator.n_features_in_ if partner is not None else wide
    if isinstance(net, dict) and "modules" in net:
        estimator.net_ = rebuild_net(estimator, net, width=width)
    else:
        estimator.net_ = net


class SavingMixin:
    """Saving, loading and export of the multi-task estimators: pickle, joblib and skops
    share ``__getstate__``/``__setstate__``; ``to_onnx`` exports for serving."""

    def __getstate__(self):
        """The state with the network as numpy arrays and the specification to rebuild it
        (see :mod:`sklearn_mtl._persistence`); plain data except what the user passed
        (a custom ``module``, loss callables, optimizer classes, callbacks)."""
        return estimator_state(super().__getstate__(), self._get_param_names())

    def __setstate__(self, state):
        """Restore a saved state, rebuilding the network on the CPU when the device it
        was trained on (CUDA) is absent."""
        state, net = split_state(state, self._get_param_names())
        super().__setstate__(state)
        attach_net(self, net)

    def to_onnx(self, path=None, *, opset=None, dtype="float32", verify=True):
        """Export the fitted model to ONNX, for serving with onnxruntime (or any ONNX
        runtime) without Python, torch or this package.

        Needs the ``serving`` extra (onnx and onnxscript to export, onnxruntime to
        verify and run the model).

        Parameters
        ----------
        path : str or path-like, default=None
            Where to write the model; None writes nothing.
        opset : int, default=None
            ONNX opset of the default domain (None: torch's default). Give the
            opset of a preprocessing graph the model is to be merged with.
        dtype : {'float32', 'float64'}, default='float32'
            Precision the network and the decoding run in. The input is float32
            in both cases; 'float64' gives the estimator's own outputs (it
            predicts in float64) up to ~1e-15.
        verify : bool, default=True
            Run the exported network with onnxruntime on random rows, at batch
            sizes other than the one it was traced with, against the torch
            network; a mismatch (a trace that depends on its example input) raises.

        Returns
        -------
        model : onnx.ModelProto
            Input ``X`` (batch, n_features) float32. Outputs: ``raw``, the packed
            network outputs; per predicted task, ``<key>_value`` (regression, on
            y's scale) or ``<key>_label`` and ``<key>_proba`` (classification,
            the labels of ``classes_`` and the columns of ``predict_proba``).
            ``<key>`` is the task label made an identifier (runs of characters
            other than letters, digits and ``_`` become ``_``, a tuple's parts are
            joined by ``_``, a repeated key gets ``_2``...); the model's metadata
            entry ``sklearn_mtl`` lists tasks, keys, outputs and classes as JSON.
            A model with retrieval features computes them in the graph from the
            training rows it holds (the same neighbours as ``predict``, ties
            included); the input is still ``X`` alone.

        Raises
        ------
        ValueError
            When torch cannot export the network, or the exported network does not
            reproduce it (e.g. a ``module=`` whose forward torch.export cannot
            trace); the message names the module.
        """
        from ._onnx import export_onnx

        return export_onnx(self, path, opset=opset, dtype=dtype, verify=verify)
