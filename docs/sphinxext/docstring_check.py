"""Check the public docstrings as numpydoc reads them, and report problems as
Sphinx warnings (so that ``-W`` fails the build on them).

numpydoc renders what it parses without complaint: a paragraph inside a
Parameters section becomes a row of parameters, a section heading without a
blank line before it becomes text. So for every class and function of the API
reference (and the public methods the package defines on those classes):

* numpydoc's own parser warnings (an unknown section name, for instance);
* when the docstring has a Parameters section, its names must be those of
  the signature (``X, y : ...`` counts for both; ``*args``/``**kwargs`` with
  or without their stars).

And every script of the gallery (``examples/*.py``) must open with a title
underlined with ``=``: sphinx-gallery's page would have no title otherwise,
which Sphinx reports only as a document missing from the navigation.
"""

import ast
import importlib
import inspect
import re
import warnings
from pathlib import Path

from numpydoc.docscrape import NumpyDocString
from sphinx.util import logging

from api_pages import collect

logger = logging.getLogger(__name__)


def _documented(section):
    return [name.strip().lstrip("*") for param in section
            for name in param.name.split(",") if name.strip()]


def _signature(obj):
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in parameters if p.name not in ("self", "cls")]


def problems(label, obj):
    """The problems of one object's docstring, as strings."""
    found = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = NumpyDocString(inspect.getdoc(obj) or "")
    found += [f"{label}: numpydoc: {w.message}" for w in caught]
    documented = _documented(doc["Parameters"]) + _documented(doc["Other Parameters"])
    signature = _signature(obj)
    if documented and signature is not None:
        missing = [name for name in signature if name not in documented]
        extra = [name for name in documented if name not in signature]
        if missing:
            found.append(f"{label}: parameters not in the Parameters section: {missing}")
        if extra:
            found.append(f"{label}: Parameters entries that are no parameter of the "
                         f"signature (a paragraph or heading read as parameters?): {extra}")
    return found


def _objects():
    for modname, page in collect().items():
        module = importlib.import_module(modname)
        for kind, names in page["own"].items():
            for name in names:
                obj = getattr(module, name)
                label = f"{modname}.{name}"
                if kind == "function":
                    yield label, obj
                elif kind == "class":
                    yield label, obj
                    for member, value in inspect.getmembers(obj):
                        if (not member.startswith("_") and callable(value)
                                and getattr(value, "__module__", "").startswith("sklearn_mtl")):
                            yield f"{label}.{member}", value


def example_problems(path):
    """The problem of one example script's docstring, or None."""
    doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8")), clean=True)
    lines = (doc or "").strip().splitlines()
    if (len(lines) < 2 or not lines[0].strip() or not re.fullmatch(r"=+", lines[1].strip())
            or len(lines[1].strip()) < len(lines[0].strip())):
        return (f"{path}: the docstring must open with a title underlined with '=' "
                "(sphinx-gallery's format), e.g. 'Quickstart: ...' then '=' * its length")
    return None


def check_docstrings(app):
    for label, obj in _objects():
        for message in problems(label, obj):
            logger.warning(message, type="sklearn_mtl", subtype="docstring")
    dirs = app.config.sphinx_gallery_conf["examples_dirs"]
    for examples in [dirs] if isinstance(dirs, str) else dirs:
        for path in sorted(Path(app.srcdir, examples).glob("*.py")):
            message = example_problems(path)
            if message:
                logger.warning(message, type="sklearn_mtl", subtype="example")


def setup(app):
    app.connect("builder-inited", check_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
