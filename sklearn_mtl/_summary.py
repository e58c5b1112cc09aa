"""``summary()``: what a fitted multi-task estimator's network is made of.

In the spirit of Keras's ``model.summary()``: the parts of the network (the
shared trunk, one head per task, the weighting strategy's own state) with
their parameter counts, and the tasks with their kind, outputs, loss and
loss weight. The fused heads (:class:`~sklearn_mtl._modules.TaskHeads`) keep
all tasks in one tensor per layer; the count of each head is its own slice
of those tensors, and the output columns padded to the widest task (which no
loss reads) are a row of their own, so that the rows add up to the total.
"""

import html

import numpy as np
import pandas as pd

from ._embeddings import EmbeddedTrunk, PeriodicEmbedding, PiecewiseLinearEncoding
from ._modules import MLPTrunk, TaskHeads, TaskParallelLinear
from ._task_graph import GraphHeads


def _count(module):
    return int(sum(p.numel() for p in module.parameters()))


def _embedding_description(embedding):
    n_features, width = embedding.n_features, embedding.embedding_dim
    if isinstance(embedding, PiecewiseLinearEncoding):
        what = f"piecewise linear, {embedding.n_bins} bins"
    elif isinstance(embedding, PeriodicEmbedding):
        what = f"periodic, {embedding.n_frequencies} frequencies"
    else:
        what = type(embedding).__name__
    return (f"{what} -> linear {width} (relu) per feature: {n_features} features -> "
            f"{n_features * width}")


def _trunk_description(model, trunk, n_in=None):
    name = type(trunk).__name__
    n_in = model.n_features_in_ if n_in is None else n_in
    if isinstance(trunk, MLPTrunk):
        sizes = [m.out_features for m in trunk.layers if hasattr(m, "out_features")]
        chain = " -> ".join(str(v) for v in [n_in, *sizes])
        extra = ", dropout {}".format(model.dropout) if model.dropout else ""
        return f"MLP {chain} ({model.activation}{extra})"
    width = getattr(trunk, "out_features", "?")
    shape = "per task" if getattr(trunk, "per_task", False) else "shared"
    return f"{name}: {n_in} features -> {width} ({shape})"


def _fused_heads(heads, names):
    """(rows, padding) of the fused TaskHeads: per task (description, parameters)."""
    layers = [m for m in heads.layers if isinstance(m, TaskParallelLinear)]
    rows = []
    padding = 0
    for t, name in enumerate(names):
        count = 0
        widths = [layers[0].in_features]
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            out = heads.n_outputs[t] if last else layer.out_features
            count += (layer.in_features + 1) * out
            if last:
                padding += (layer.in_features + 1) * (layer.out_features - out)
            widths.append(out)
        rows.append((" -> ".join(str(w) for w in widths), count))
    return rows, padding


def _graph_heads(heads, names):
    rows = []
    for t, name in enumerate(names):
        linears = [m for m in heads.heads[t].modules() if hasattr(m, "in_features")]
        widths = [linears[0].in_features] + [m.out_features for m in linears]
        reads = [names[s] for s in heads.sources.get(t, [])]
        description = " -> ".join(str(w) for w in widths)
        if reads:
            description += f" (reads {', '.join(map(str, reads))})"
        if heads.depths is not None:
            description += f" (trunk layer {heads.depths[t] + 1})"
        rows.append((description, _count(heads.heads[t])))
    return rows


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _loss_name(loss):
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", type(loss).__name__)


class ModelSummary:
    """The description of a fitted network that ``summary()`` returns.

    Attributes
    ----------
    title : str
        The estimator, its input width, its tasks and how long it trained.
    parts : DataFrame
        One row per part of the network (``embedding`` with a feature
        embedding, ``trunk``, ``head <task>``, the output
        padding of the fused heads if any, ``weighting``): ``description`` and
        ``parameters``.
    tasks : DataFrame
        One row per task (index: the task labels): ``kind``, ``outputs``,
        ``loss``, ``loss_weight`` (the static weight), ``last_weight`` (the
        effective weight of the last epoch) and ``auxiliary``.
    total_parameters : int
        The sum of ``parts['parameters']``: every parameter of the network and
        of the weighting state.
    """

    def __init__(self, title, parts, tasks):
        self.title = title
        self.parts = parts
        self.tasks = tasks
        self.total_parameters = int(parts["parameters"].sum())

    def _text_tables(self):
        """(header, rows) of the parts (with a total row) and of the tasks, as text."""
        parts = [[str(label), d, f"{c:,}"] for label, d, c in
                 zip(self.parts.index, self.parts["description"], self.parts["parameters"])]
        parts_total = ["total", "", f"{self.total_parameters:,}"]
        tasks = []
        for name, row in self.tasks.iterrows():
            last = "" if pd.isna(row["last_weight"]) else f"{row['last_weight']:.3g}"
            tasks.append([str(name), row["kind"], str(row["outputs"]), row["loss"],
                          f"{row['loss_weight']:g}", last, "yes" if row["auxiliary"] else ""])
        return ((["part", "description", "parameters"], parts, parts_total),
                (["task", "kind", "outputs", "loss", "loss weight", "last weight",
                  "auxiliary"], tasks))

    def __str__(self):
        (p_head, p_rows, p_total), (t_head, t_rows) = self._text_tables()
        p_right, t_right = {2}, {2, 4, 5}
        p_widths = [max(len(r[i]) for r in [p_head, *p_rows, p_total]) for i in range(3)]
        t_widths = [max(len(r[i]) for r in [t_head, *t_rows]) for i in range(len(t_head))]
        p_line = _line(p_head, p_widths, p_right)
        t_line = _line(t_head, t_widths, t_right)
        width = max(len(p_line), len(t_line), len(self.title))
        if len(p_line) < width:  # stretch the description column to the full width
            p_widths[1] += width - len(p_line)
            p_line = _line(p_head, p_widths, p_right)
        rule, thin = "=" * width, "-" * width
        lines = [self.title, rule, p_line, thin]
        lines += [_line(r, p_widths, p_right) for r in p_rows]
        lines += [thin, _line(p_total, p_widths, p_right), rule, t_line, thin]
        lines += [_line(r, t_widths, t_right) for r in t_rows]
        lines.append(rule)
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        (p_head, p_rows, p_total), (t_head, t_rows) = self._text_tables()
        return (f"<div><p><b>{html.escape(self.title)}</b></p>"
                f"{_html_table(p_head, [*p_rows, p_total])}{_html_table(t_head, t_rows)}</div>")


def _line(cells, widths, right):
    return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def _html_table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def describe(model):
    """The :class:`ModelSummary` of a fitted multi-task estimator."""
    net = model.net_
    module = net.module_
    tasks = model.tasks_
    names = [t.name for t in tasks]
    labels = [f"head {name}" + (" (auxiliary)" if t.auxiliary else "")
              for name, t in zip(names, tasks)]
    trunk = module.trunk
    if isinstance(trunk, EmbeddedTrunk):  # the embedding is a part of its own
        embedding = trunk.embedding
        rows = [("embedding", _embedding_description(embedding), _count(embedding)),
                ("trunk", _trunk_description(model, trunk.trunk, embedding.out_features),
                 _count(trunk.trunk))]
    else:
        rows = [("trunk", _trunk_description(model, trunk), _count(trunk))]
    heads = module.heads
    members = getattr(module, "n_members", 1)
    if isinstance(heads, TaskHeads):
        head_rows, padding = _fused_heads(heads, names * members)
        if members > 1:  # an ensemble: one row per task, its heads over all members
            T = len(names)
            head_rows = [(f"{head_rows[t][0]} (x{members} members)",
                          sum(head_rows[m * T + t][1] for m in range(members)))
                         for t in range(T)]
        rows += [(label, d, c) for label, (d, c) in zip(labels, head_rows)]
        if padding:
            rows.append(("output padding", "unused output columns of the fused heads "
                         "(read by no loss)", padding))
    elif isinstance(heads, GraphHeads):
        rows += [(label, d, c) for label, (d, c) in zip(labels, _graph_heads(heads, names))]
    else:  # a head module of another kind: one row
        rows.append(("heads", type(heads).__name__, _count(heads)))
    if members > 1:
        rows.append(("member adapters", f"{members} x {model.n_features_in_} input scalings",
                     int(module.adapter.numel())))
    counted = sum(r[2] for r in rows)
    rest = _count(module) - counted
    if rest:  # parameters outside the trunk and heads (none in the built-in modules)
        rows.append(("other", "other module parameters", rest))
    weighting = net.weighting_
    rows.append(("weighting", repr(net.weighting), _count(weighting)))
    parts = pd.DataFrame({"description": [r[1] for r in rows],
                          "parameters": [r[2] for r in rows]},
                         index=pd.Index([r[0] for r in rows], name="part"))

    static = np.asarray(net.static_weights, dtype=float)
    last = net.history[-1] if len(net.history) else {}
    table = pd.DataFrame({
        "kind": [t.kind for t in tasks],
        "outputs": [t.n_outputs for t in tasks],
        "loss": [_loss_name(t.loss) for t in tasks],
        "loss_weight": static,
        "last_weight": [last.get(f"weight_{name}", np.nan) for name in names],
        "auxiliary": [t.auxiliary for t in tasks],
    }, index=pd.Index(names, name="task", tupleize_cols=False))
    epochs = getattr(model, "n_epochs_", len(net.history))
    title = (f"{type(model).__name__}: {_plural(model.n_features_in_, 'feature')} in, "
             f"{_plural(len(tasks), 'task')}, {_plural(epochs, 'epoch')} trained on {net.device}")
    return ModelSummary(title, parts, table)
