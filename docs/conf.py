"""Sphinx configuration of the sklearn-mtl documentation.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

(``-D plot_gallery=0`` skips running the examples.)
"""

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The package from this checkout, and the helpers in docs/sphinxext.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "sphinxext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import sklearn_mtl  # noqa: E402
from api_pages import aliases, inherited_members_shown, write_api_pages  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "sklearn-mtl"
author = "sklearn-mtl developers"
copyright = "sklearn-mtl developers"
release = sklearn_mtl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "api_pages",  # docs/sphinxext: the API pages and their cross-references
    "docstring_check",  # docs/sphinxext: docstrings as numpydoc reads them
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip"]
root_doc = "index"
default_role = "literal"  # `x` is code, as in numpydoc docstrings
# "fit()" rather than "MultiTaskRegressorClassifier.fit()" in the page tables of contents.
toc_object_entries_show_parents = "hide"

# -- API reference -------------------------------------------------------------

# One page per public module (docs/api/<module>.rst), generated from the
# package's __all__ on every build; autosummary then writes one page per name
# into docs/api/generated/. Nothing of this is listed by hand.
API_PAGES = write_api_pages(HERE)
_api_aliases = aliases(API_PAGES)

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    # Members of the package's classes, inherited ones included (the estimators'
    # methods live on a shared base class, get_params and set_params come from
    # scikit-learn), but not the many of torch.nn.Module or skorch's callbacks.
    "inherited-members": "Module,Callback,PrintLog",
    "member-order": "alphabetical",
}
autodoc_typehints = "none"
autoclass_content = "class"  # the class docstring holds Parameters (numpydoc style)

numpydoc_show_class_members = True
# The Methods table of a class lists inherited methods too (the estimators'
# come from a shared base class and scikit-learn), except for torch modules and
# skorch callbacks, whose many inherited methods are torch's and skorch's.
numpydoc_show_inherited_class_members = inherited_members_shown()
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- Gallery -------------------------------------------------------------------

# Examples that run during the build (their output and figures are shown):
# these four and every plot_*.py. Any other example is shown with its code
# only (one that needs packages outside the docs extra, for instance); add it
# here to run it. Together they take about two minutes on two cores.
EXECUTED = r"/(quickstart|healthcare|images_multitask|tune_loss_weights|plot_\w+)\.py$"

# sphinx-gallery resolves the names an example uses (for the API pages' links) by
# getattr on their modules; sklearn_mtl.distributed.Incremental is made on first use
# from dask-ml and raises ImportError without it. Without dask-ml (the docs extra
# alone) that example's page is left out; CI builds the docs with it installed.
IGNORED = r"__init__\.py"
if importlib.util.find_spec("dask_ml") is None:
    IGNORED += r"|incremental_dask_ml\.py"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": EXECUTED,
    "ignore_pattern": IGNORED,
    "within_subsection_order": "gallery_order.QuickstartFirst",
    "doc_module": ("sklearn_mtl",),
    "backreferences_dir": "api/backreferences",
    "reference_url": {"sklearn_mtl": None},
    "image_scrapers": ("matplotlib",),
    "capture_repr": (),
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "show_memory": False,
    "show_signature": False,
    "download_all_examples": False,
    "default_thumb_file": str(HERE / "_static" / "thumbnail.png"),
}

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-mtl {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "logo": {"text": "sklearn-mtl"},
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # The landing page has no table of contents of its own to show.
    "secondary_sidebar_items": {"**": ["page-toc"], "index": []},
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
# The examples' code lines (up to 99 characters) need the room of the left
# navigation; the gallery index and the previous/next links lead between them.
html_sidebars = {"auto_examples/*": []}
