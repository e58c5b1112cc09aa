"""Write the API reference pages from the package's public names.

Every public module of ``sklearn_mtl`` (the package itself and each submodule
or subpackage whose name has no leading underscore) gets one page, listing
the names of its ``__all__`` by kind with an autosummary table; autosummary
then writes one page per name from the templates in ``_templates``. Each
object is documented once, on the page of the shortest public module that
exports it; the other modules that export it link to that page, and
references to it through them (``:func:`sklearn_mtl.metrics.make_task_scorer```)
resolve to it. A module added to the package, or a name added to a module's
``__all__``, appears at the next build without any change here.

The pages are written into ``docs/api/`` (ignored by git) when ``conf.py`` is
read, before Sphinx collects the documents.
"""

import importlib
import inspect
import pkgutil
from pathlib import Path

PACKAGE = "sklearn_mtl"

# Public modules shown first, in this order; any other public module follows,
# sorted by name.
PREFERRED_ORDER = [
    "sklearn_mtl",
    "sklearn_mtl.metrics",
    "sklearn_mtl.weighting",
    "sklearn_mtl.architectures",
    "sklearn_mtl.datasets",
    "sklearn_mtl.inspection",
    "sklearn_mtl.callbacks",
    "sklearn_mtl.model_selection",
    "sklearn_mtl.distributed",
]

KINDS = [("Classes", "class"), ("Functions", "function"), ("Data", "data")]


def public_modules():
    """Names of the public modules: the package, then its public submodules."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [
        f"{PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]
    rank = {name: i for i, name in enumerate(PREFERRED_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def public_names(module):
    """The public names of a module: its ``__all__``, else the names it defines."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, obj in vars(module).items()
            if not inspect.ismodule(obj)
            and getattr(obj, "__module__", "").startswith(module.__name__)
        ]
    return [name for name in names if not name.startswith("_")]


def kind_of(obj):
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def _first_line(module):
    doc = inspect.getdoc(module) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def collect():
    """{module: {"doc": first line, "own": {kind: [names]}, "also": [(home, name, kind)]}}.

    An object exported by several public modules (``make_task_scorer`` by the
    package and by ``sklearn_mtl.metrics``) is documented on the page of the
    shortest of them, the import path the README and the examples use, and the
    one sphinx-gallery links the examples' code to; the others link to it.
    """
    modules = public_modules()
    exported = {}  # module -> [(name, obj, kind)]
    homes = {}  # id(obj) -> first module (shortest path, then page order) exporting it
    for modname in sorted(modules, key=lambda m: (m.count("."), modules.index(m))):
        module = importlib.import_module(modname)
        exported[modname] = []
        for name in public_names(module):
            obj = getattr(module, name)
            kind = kind_of(obj)
            exported[modname].append((name, obj, kind))
            if kind != "data":
                homes.setdefault(id(obj), modname)
    pages = {}
    for modname in modules:
        own = {kind: [] for _, kind in KINDS}
        also = []
        for name, obj, kind in exported[modname]:
            home = modname if kind == "data" else homes[id(obj)]
            if home == modname:
                own[kind].append(name)
            else:
                also.append((home, name, kind))
        module = importlib.import_module(modname)
        pages[modname] = {"doc": _first_line(module), "own": own, "also": also}
    return pages


def aliases(pages):
    """{"<module>.<name>": "<home>.<name>"} for the re-exported names."""
    return {f"{modname}.{name}": f"{home}.{name}"
            for modname, page in pages.items() for home, name, _ in page["also"]}


def _underline(text, char):
    return f"{text}\n{char * len(text)}\n"


ROLES = {"class": "class", "function": "func", "data": "data"}


def module_page(modname, page):
    lines = [f".. _api_{modname}:", "", _underline(f"``{modname}``", "="),
             f".. automodule:: {modname}", "   :no-members:", "   :no-inherited-members:", "",
             f".. currentmodule:: {modname}", ""]
    for title, kind in KINDS:
        names = sorted(page["own"][kind], key=str.lower)
        if not names:
            continue
        # No :template: option: autosummary picks _templates/autosummary/<kind>.rst.
        lines += [_underline(title, "-"), ".. autosummary::", "   :toctree: generated/",
                  "   :nosignatures:", "",
                  *[f"   {name}" for name in names], ""]
    if page["also"]:
        lines += [_underline("Also importable from here", "-")]
        for home in sorted({home for home, _, _ in page["also"]}):
            links = ", ".join(f":{ROLES[kind]}:`~{home}.{name}`" for h, name, kind
                              in sorted(page["also"], key=lambda a: a[1]) if h == home)
            lines += [f"Documented under :ref:`{home} <api_{home}>`: {links}.", ""]
    return "\n".join(lines)


def modules_table(pages):
    rows = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
            "   * - module", "     - contents"]
    for modname, page in pages.items():
        rows += [f"   * - :ref:`{modname} <api_{modname}>`", f"     - {page['doc']}"]
    # The navigation lists the module pages in the order of the table.
    rows += ["", ".. toctree::", "   :hidden:", "", *[f"   api/{modname}" for modname in pages]]
    return "\n".join(rows) + "\n"


def _write(path, text):
    """Write only when the text changed, so that Sphinx rebuilds only what changed."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_api_pages(docs_dir):
    """Write ``docs/api/<module>.rst`` for every public module and the modules table
    with its toctree, ``docs/api/modules.rst.inc`` (included by ``docs/api.rst``);
    remove the pages of modules and names that no longer exist."""
    out = Path(docs_dir) / "api"
    out.mkdir(exist_ok=True)
    pages = collect()
    for modname, page in pages.items():
        _write(out / f"{modname}.rst", module_page(modname, page))
    for stale in out.glob("*.rst"):
        if stale.stem not in pages:
            stale.unlink()
    # Pages of names that left the package would be documents outside any toctree.
    expected = {f"{modname}.{name}" for modname, page in pages.items()
                for names in page["own"].values() for name in names}
    for stale in (out / "generated").glob("*.rst"):
        if stale.stem not in expected:
            stale.unlink()
    _write(out / "modules.rst.inc", modules_table(pages))
    return pages


def inherited_members_shown():
    """numpydoc_show_inherited_class_members: False for the documented classes that
    are torch modules or skorch callbacks, True (numpydoc's default) for the others."""
    import skorch.callbacks
    import torch

    shown = {}
    for modname, page in collect().items():
        module = importlib.import_module(modname)
        for name in page["own"]["class"]:
            cls = getattr(module, name)
            if issubclass(cls, (torch.nn.Module, skorch.callbacks.Callback)):
                shown[f"{modname}.{name}"] = False
    return shown


def _resolve_alias(app, env, node, contnode):
    """``missing-reference``: a Python reference to a re-exported name (as
    ``sklearn_mtl.metrics.make_task_scorer``, or ``make_task_scorer`` inside that
    module's docstrings) resolves to the page that documents the object."""
    if node.get("refdomain") != "py":
        return None
    table = env.app.config._api_aliases
    target = node["reftarget"].lstrip("~.")
    module = node.get("py:module")
    for candidate in (target, f"{module}.{target}" if module else None):
        if candidate in table:
            domain = env.get_domain("py")
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       table[candidate], node, contnode)
    return None


def setup(app):
    app.add_config_value("_api_aliases", {}, "env")
    app.connect("missing-reference", _resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
