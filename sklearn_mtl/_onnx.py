"""ONNX export of a fitted estimator, for serving without Python or torch.

One graph holds the network and the decoding of its outputs:

* input ``X``: float32 (batch, n_features), the rows ``predict`` takes (after
  any preprocessing; see ``examples/serve_onnx.py`` for a scikit-learn
  preprocessor merged in front);
* output ``raw``: the packed network outputs (batch, width), what
  ``net_.raw_outputs`` returns (task t in columns ``t*s : t*s + k_t``, s the
  widest task's output count);
* per predicted task, under its *key* (the task label made an identifier,
  see :func:`output_keys`): ``<key>_value`` (batch,) for a regression task,
  on the original scale of y; ``<key>_label`` (batch,) and ``<key>_proba``
  (batch, n_classes) for a classification task, the labels of ``classes_``
  (strings, integers, floats or booleans; the class index for labels of
  other types) and the probabilities of ``predict_proba``.

A model that reads retrieval features (the labels of each row's nearest
training rows) computes them in the graph, which holds those rows
(:func:`_prepend_retrieval`); the input is still ``X`` alone.

The batch dimension is dynamic. The network runs in ``dtype``: float32 by
default (outputs within ~1e-6 relative of the estimator's, which computes in
float64), or float64, where the outputs equal the estimator's to ~1e-15 and
labels match even at ties near a decision boundary.

The network is captured with ``torch.export.export`` and translated by
``torch.onnx.export`` (the exporter built on torch.export; it needs
``onnxscript``, in the ``serving`` extra). The TorchScript exporter
(``torch.onnx.export(dynamo=False)``) also exports these networks, ~20x
faster, but is deprecated since torch 2.9 and scheduled for removal, and its
tracer records value-dependent branches silently. The exported graph is then
checked with onnxruntime against the torch network (``verify=True``), and
the decoding is appended with ``onnx.helper`` (string labels are not torch
tensors).
"""

import contextlib
import copy
import importlib
import io
import json
import logging
import re
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._net import inference_only
from ._retrieval import n_retrieval_features, retrieval_features

# Rows of the example input the network is traced with (2: torch.export
# specialises sizes 0 and 1).
_EXAMPLE_ROWS = 2
_DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}
# Loggers that report, at each export, optional torchvision kernels not found, and,
# when tracing fails, the partial graph (the error we raise says what failed).
_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration",
                  "torch.onnx._internal.exporter", "torch.fx.experimental.symbolic_shapes")
# Batch sizes the exported graph is checked at (besides the traced one).
_VERIFY_ROWS = (1, 5)
_VERIFY_RTOL = 1e-4


def _require(name, what):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{what} needs the optional package {name!r}; install it with "
                          f"`pip install \"sklearn-mtl[serving]\"`.") from exc


def _check_dtype(dtype):
    key = dtype
    if not isinstance(dtype, str):
        try:
            key = np.dtype(dtype).name
        except TypeError:
            key = None
    if key not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64' (the precision the network "
                         f"runs in); got {dtype!r}.")
    return key


def output_keys(task_names):
    """Identifier-like keys for task labels: non-word characters become ``_`` (a tuple
    label's parts are joined), ``task`` when nothing is left, and a suffix ``_2``,
    ``_3``... where two labels give the same key. ONNX output ``<key>_value`` etc."""
    keys, seen = [], set()
    for name in task_names:
        text = "_".join(map(str, name)) if isinstance(name, tuple) else str(name)
        base = re.sub(r"\W+", "_", text).strip("_") or "task"
        key, n = base, 1
        while key in seen:
            n += 1
            key = f"{base}_{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _module_label(estimator):
    module = estimator.module
    if module is not None:
        name = module.__name__ if isinstance(module, type) else type(module).__name__
        return f"module={name}"
    architecture = estimator.architecture
    name = architecture if isinstance(architecture, str) else type(architecture).__name__
    return f"the {name!r} network"


class _Exported(torch.nn.Module):
    """The network as exported: float32 rows in, packed outputs in ``dtype`` out."""

    def __init__(self, module, dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, X):
        return self.module(X.to(self.dtype))


class _ExportedWithRetrieval(torch.nn.Module):
    """The networks of a model that reads retrieval features: float32 rows ``X`` and
    their features ``R`` in, packed outputs in ``dtype`` out. With ``plain`` (the
    choice of ``retrieval='auto'``) the columns of the tasks predicted with retrieval
    come from ``wide``, the others from ``plain``; without it (``'on'``) all of them."""

    def __init__(self, plain, wide, columns, dtype):
        super().__init__()
        self.plain, self.wide, self.dtype = plain, wide, dtype
        self.register_buffer("columns", columns)

    def forward(self, X, R):
        wide = self.wide(torch.cat([X, R], 1).to(self.dtype))
        if self.plain is None:
            return wide
        return torch.where(self.columns, wide, self.plain(X.to(self.dtype)))


@contextlib.contextmanager
def _quiet_export():
    """Silence what the exporter reports that is no concern of the user's: missing
    optional torchvision kernels and its own deprecations at every call, and, when
    tracing fails, the partial graph torch.export prints to stderr (the error we
    raise says what failed)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch|copyreg")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _hint(estimator):
    if estimator.module is None:
        return ""
    return (" (its forward must be traceable by torch.export: no data-dependent Python "
            "control flow, no numpy calls, no fixed batch size)")


def _inference_copy(net, torch_dtype):
    return inference_only(copy.deepcopy(net.prediction_module()).to("cpu", torch_dtype).eval())


def _wrapper(estimator, torch_dtype):
    """``(wrapper, example inputs, input names)`` of the module to export."""
    example = torch.zeros(_EXAMPLE_ROWS, estimator.n_features_in_)
    state = estimator.__dict__.get("_retrieval")
    if state is None:
        return _Exported(_inference_copy(estimator.net_, torch_dtype), torch_dtype).eval(), \
            (example,), ["X"]
    partner = estimator.__dict__.get("_retrieval_net")
    if partner is None:  # retrieval='on': net_ reads the features
        plain, wide, columns = None, _inference_copy(estimator.net_, torch_dtype), None
    else:
        plain = _inference_copy(estimator.net_, torch_dtype)
        wide = _inference_copy(partner, torch_dtype)
        stride = estimator.net_.module_.heads.max_out
        columns = torch.tensor([chosen for chosen in estimator._retrieval_tasks
                                for _ in range(stride)])
    features = torch.zeros(_EXAMPLE_ROWS, n_retrieval_features(state))
    wrapper = _ExportedWithRetrieval(plain, wide, columns, torch_dtype).eval()
    return wrapper, (example, features), ["X", "R"]


def _network_model(estimator, torch_dtype, opset):
    """The network as an ONNX ModelProto: input ``X`` (and ``R``, the retrieval
    features, for a model that reads them), output ``raw``."""
    wrapper, example, names = _wrapper(estimator, torch_dtype)
    what = _module_label(estimator)
    batch = torch.export.Dim("batch")
    try:
        with _quiet_export(), torch.no_grad():
            # torch.export first, then the ONNX translation of its program: a module
            # torch.export cannot trace fails here, once (torch.onnx.export given the
            # module would retry with two more capture strategies, ~3 s each, and
            # print their graphs).
            exported = torch.export.export(
                wrapper, example, dynamic_shapes=tuple({0: batch} for _ in example),
                strict=False)
            program = torch.onnx.export(exported, dynamo=True, input_names=names,
                                        output_names=["raw"], opset_version=opset,
                                        verbose=False, optimize=True)
    except Exception as exc:  # torch reports many kinds of failure; say whose it is
        detail = str(exc).strip().splitlines()
        detail = detail[0][:500] if detail else type(exc).__name__
        raise ValueError(f"torch.onnx could not export {what} to ONNX: "
                         f"{type(exc).__name__}: {detail}{_hint(estimator)}") from exc
    model = program.model_proto
    _name_batch_dimension(model)
    return model, wrapper


def _name_batch_dimension(model):
    """Call the symbolic batch dimension torch chose (``s29``...) ``batch``."""
    symbol = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for info in list(model.graph.input) + list(model.graph.output) + list(
            model.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def _verify(model, wrapper, estimator):
    """Run the exported graph with onnxruntime on random rows, at batch sizes other
    than the traced one, against the torch network it came from: a trace that
    baked in something of the example input (a value-dependent branch taken one
    way, a fixed batch size) is refused here rather than served."""
    ort = _require("onnxruntime", "to_onnx(verify=True)")
    what = _module_label(estimator)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    state = estimator.__dict__.get("_retrieval")
    for n in _VERIFY_ROWS:
        X = rng.normal(size=(n, estimator.n_features_in_)).astype(np.float32)
        inputs = (torch.from_numpy(X),)
        if state is not None:
            # Training rows too: their neighbours tie at distance 0 with any duplicates.
            X[: n // 2] = state["X"][rng.integers(0, len(state["X"]), n // 2)]
            inputs = (torch.from_numpy(X), torch.from_numpy(retrieval_features(state, X)))
        with torch.no_grad():
            expected = wrapper(*inputs).numpy()
        try:
            (got,) = session.run(["raw"], {"X": X})
        except Exception as exc:
            raise ValueError(f"The ONNX graph of {what} fails on a batch of {n} row(s): "
                             f"{type(exc).__name__}: {str(exc)[:300]}{_hint(estimator)}"
                             ) from exc
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        if got.shape != expected.shape or not np.allclose(
                got, expected, rtol=_VERIFY_RTOL, atol=_VERIFY_RTOL * scale):
            diff = (float(np.abs(got - expected).max()) if got.shape == expected.shape
                    else f"shape {got.shape} instead of {expected.shape}")
            raise ValueError(
                f"The ONNX graph of {what} does not reproduce the network on a batch of "
                f"{n} row(s) (max difference {diff}): the trace depends on its example "
                f"input{_hint(estimator)}.")


# ---------------------------------------------------------------------------
# Retrieval features


def _prepend_retrieval(onnx, graph, state):
    """Compute the network's input ``R`` from ``X`` in the graph: the retrieval
    features of :func:`sklearn_mtl._retrieval.retrieval_features`, node for node.

    The squared distances to the training rows are summed feature by feature in
    float64, in the order numpy sums them (the same bits), and TopK keeps the lower
    index first among equal distances, as the numpy search does: the exported model
    picks the same neighbours as ``predict``, ties included. Memory: one float64
    (batch, n_training_rows) matrix at a time.
    """
    first = len(graph.node)
    g = _Graph(onnx, graph, np.float32, prefix="retrieval")
    x = g.node("Cast", ["X"], to=onnx.TensorProto.DOUBLE)
    train = state["X"].astype(np.float64)
    axis1 = g.const("axis1", np.array([1], dtype=np.int64))
    total = None
    for f in range(train.shape[1]):
        column = g.node("Slice", [x, g.const("start", np.array([f], dtype=np.int64)),
                                  g.const("end", np.array([f + 1], dtype=np.int64)), axis1])
        diff = g.node("Sub", [column, g.const("train", train[None, :, f].copy())])
        square = g.node("Mul", [diff, diff])
        total = square if total is None else g.node("Add", [total, square])
    rows = g.node("Slice", [g.node("Shape", ["X"]), g.const("zero", np.array([0], np.int64)),
                            g.const("one", np.array([1], np.int64))])
    parts = [_task_lookup(g, total, task, state["sizes"], rows, len(train))
             for task in state["tasks"]]
    g.node("Concat", parts, axis=1, output="R")
    # The features are computed, not given: R leaves the inputs, its nodes go first.
    for i, info in enumerate(graph.input):
        if info.name == "R":
            del graph.input[i]
            break
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[first:] + nodes[:first])


def _task_lookup(g, total, task, sizes, rows, n_rows):
    """One task's features (batch, width * len(sizes) + 1) from the squared distances
    to every training row."""
    values, positions = task["values"], task["positions"]
    if not len(positions):
        # No candidate: the mean label, distance 0 (as retrieval_features gives).
        row = np.concatenate([np.tile(task["prior"], len(sizes)), [0.0]]).astype(np.float32)
        shape = g.node("Concat", [rows, g.const("width", np.array([len(row)], np.int64))],
                       axis=0)
        return g.node("Expand", [g.const("prior", row[None, :]), shape])
    k = min(sizes[-1], len(positions))
    distance = total
    if not np.array_equal(positions, np.arange(n_rows)):  # not every training row labels it
        distance = g.node("Gather", [total, g.const("positions", positions.astype(np.int64))],
                          axis=1)
    topk = g.name("topk")
    nearest = [f"{topk}_values", f"{topk}_indices"]
    g.graph.node.append(g.onnx.helper.make_node(
        "TopK", [distance, g.const("k", np.array([k], np.int64))], nearest,
        name=g.name("TopK"), axis=1, largest=0, sorted=1))
    labels = g.node("Gather", [g.const("labels", values.astype(np.float32)), nearest[1]],
                    axis=0)  # (batch, k, width)
    cumulative = g.node("CumSum", [labels, g.const("axis", np.array(1, np.int64))])
    parts = []
    for size in sizes:
        m = min(size, k)
        total_m = g.node("Gather", [cumulative, g.const("last", np.array(m - 1, np.int64))],
                         axis=1)  # (batch, width)
        parts.append(g.node("Div", [total_m, g.const("count", np.array(m, np.float32))]))
    d0 = g.node("Slice", [nearest[0], g.const("zero", np.array([0], np.int64)),
                          g.const("one", np.array([1], np.int64)),
                          g.const("axis1", np.array([1], np.int64))])
    log = g.node("Log", [g.node("Add", [g.node("Sqrt", [d0]),
                                         g.const("one", np.array(1.0, np.float64))])])
    parts.append(g.node("Cast", [log], to=g.onnx.TensorProto.FLOAT))
    return g.node("Concat", parts, axis=1)


# ---------------------------------------------------------------------------
# Decoding nodes


class _Graph:
    """Appends nodes, constants and outputs to an ONNX graph, with unique names."""

    def __init__(self, onnx, graph, np_dtype, prefix="decode"):
        self.onnx, self.graph, self.np_dtype, self.prefix = onnx, graph, np_dtype, prefix
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))
        self.count = 0

    def name(self, stem):
        self.count += 1
        return f"{self.prefix}/{stem}_{self.count}"

    def const(self, stem, array):
        name = self.name(stem)
        self.graph.initializer.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def string_const(self, stem, values):
        name = self.name(stem)
        self.graph.initializer.append(self.onnx.helper.make_tensor(
            name, self.onnx.TensorProto.STRING, [len(values)],
            [str(v).encode("utf-8") for v in values]))
        return name

    def node(self, op, inputs, stem=None, output=None, **attrs):
        output = output or self.name(stem or op.lower())
        self.graph.node.append(self.onnx.helper.make_node(op, list(inputs), [output],
                                                          name=self.name(op), **attrs))
        return output

    def output(self, name, elem, shape, doc):
        info = self.onnx.helper.make_tensor_value_info(name, elem, shape)
        info.doc_string = doc
        self.graph.output.append(info)


def _label_constant(g, classes):
    """(constant name, element type) of the class labels, or None when ONNX has no type
    for them (then the label output is the class index)."""
    classes = np.asarray(classes)
    values = classes.tolist()
    if classes.dtype.kind in "US" or (classes.dtype == object and values
                                      and all(isinstance(v, str) for v in values)):
        return g.string_const("classes", values), g.onnx.TensorProto.STRING
    if classes.dtype.kind in "biuf":
        elem = g.onnx.helper.np_dtype_to_tensor_dtype(classes.dtype)
        return g.const("classes", classes), elem
    return None


def _decode_task(g, raw, task, key, start):
    """The nodes and outputs of one task; returns its metadata entry."""
    onnx = g.onnx
    k = task.n_outputs
    axis1 = g.const("axis1", np.array([1], dtype=np.int64))
    out = g.node("Slice", [raw, g.const("start", np.array([start], dtype=np.int64)),
                           g.const("end", np.array([start + k], dtype=np.int64)), axis1],
                 stem=f"{key}_raw")
    entry = {"name": str(task.name), "key": key, "kind": task.kind}
    doc = f"task {task.name!r}"
    if task.kind == "regression":
        value = g.node("Squeeze", [out, axis1])
        if task.loss == "poisson":
            value = g.node("Exp", [value])
        # StandardScaler.inverse_transform: times scale_ (with_std), plus mean_ (with_mean).
        encoder = task.encoder
        if encoder.with_std:
            value = g.node("Mul", [value, g.const("scale", encoder.scale_.astype(g.np_dtype))])
        name = f"{key}_value"
        if encoder.with_mean:
            g.node("Add", [value, g.const("mean", encoder.mean_.astype(g.np_dtype))],
                   output=name)
        else:
            g.node("Identity", [value], output=name)
        g.output(name, g.elem, ["batch"], f"{doc}: predicted value, original scale")
        entry["outputs"] = [name]
        return entry
    if task.kind == "binary":
        logit = g.node("Squeeze", [out, axis1])
        positive = g.node("Greater", [logit, g.const("zero", np.zeros((), g.np_dtype))])
        codes = g.node("Cast", [positive], to=onnx.TensorProto.INT64)
        p = g.node("Sigmoid", [logit])
        q = g.node("Sub", [g.const("one", np.ones((), g.np_dtype)), p])
        proba_inputs = [g.node("Unsqueeze", [q, axis1]), g.node("Unsqueeze", [p, axis1])]
        proba = g.node("Concat", proba_inputs, axis=1, output=f"{key}_proba")
    else:
        codes = g.node("ArgMax", [out], axis=1, keepdims=0)
        proba = g.node("Softmax", [out], axis=1, output=f"{key}_proba")
    label_name = f"{key}_label"
    labels = _label_constant(g, task.classes_)
    if labels is None:
        g.node("Identity", [codes], output=label_name)
        elem, entry["label"] = onnx.TensorProto.INT64, "index"
    else:
        constant, elem = labels
        g.node("Gather", [constant, codes], axis=0, output=label_name)
        entry["label"] = "class"
    n_classes = len(task.classes_)
    g.output(label_name, elem, ["batch"], f"{doc}: predicted {entry['label']}")
    g.output(proba, g.elem, ["batch", n_classes], f"{doc}: probabilities of classes_")
    entry["outputs"] = [label_name, proba]
    entry["classes"] = [v if isinstance(v, (str, int, float, bool)) else str(v)
                        for v in np.asarray(task.classes_).tolist()]
    return entry


def _metadata(estimator, entries, dtype):
    info = {"producer": "sklearn-mtl", "estimator": type(estimator).__name__,
            "input": "X", "n_features": int(estimator.n_features_in_), "dtype": dtype,
            "tasks": entries}
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        info["feature_names"] = [str(n) for n in names]
    state = estimator.__dict__.get("_retrieval")
    if state is not None:
        info["retrieval"] = {"n_neighbors": int(state["sizes"][-1]),
                             "n_training_rows": int(len(state["X"])),
                             "tasks": [str(k) for k, v in estimator.retrieval_.items() if v]}
    return json.dumps(info)


def export_onnx(estimator, path=None, *, opset=None, dtype="float32", verify=True):
    """See :meth:`sklearn_mtl.MultiTaskRegressorClassifier.to_onnx`."""
    check_is_fitted(estimator)
    onnx = _require("onnx", "to_onnx")
    _require("onnxscript", "to_onnx (torch's ONNX exporter)")
    dtype = _check_dtype(dtype)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)
                              or opset < 13):
        raise ValueError(f"opset must be an int >= 13 (or None: torch's default); "
                         f"got {opset!r}.")
    torch_dtype, np_dtype = _DTYPES[dtype]
    if dtype == "float64" and estimator.net_.__dict__.get("_float32_inference"):
        raise ValueError(f"{_module_label(estimator)} does not run in float64; export "
                         "with dtype='float32'.")
    model, wrapper = _network_model(estimator, torch_dtype, opset)
    state = estimator.__dict__.get("_retrieval")
    if state is not None:
        _prepend_retrieval(onnx, model.graph, state)
    if verify:
        _verify(model, wrapper, estimator)
    graph = model.graph
    g = _Graph(onnx, graph, np_dtype)
    raw = graph.output[0].name
    stride = estimator.net_.module_.heads.max_out
    tasks = estimator.tasks_
    keys = output_keys([t.name for t in tasks if not t.auxiliary])
    entries, keys = [], iter(keys)
    for t, task in enumerate(tasks):
        if not task.auxiliary:
            entries.append(_decode_task(g, raw, task, next(keys), t * stride))
    graph.output[0].doc_string = ("packed network outputs: task t in columns "
                                  f"t*{stride} : t*{stride} + n_outputs[t]")
    graph.name = f"sklearn_mtl_{type(estimator).__name__}"
    model.producer_name = "sklearn-mtl"
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {"sklearn_mtl": _metadata(estimator, entries, dtype)})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save_model(model, path)
    return model
