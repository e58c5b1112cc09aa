"""Order of the examples in the gallery: the quickstart first, then by file name."""

from pathlib import Path

FIRST = ["quickstart.py", "healthcare.py", "tune_loss_weights.py"]


class QuickstartFirst:
    """sphinx-gallery ``within_subsection_order`` key: the files of ``FIRST`` in
    that order, then the other examples sorted by file name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = Path(filename).name
        rank = FIRST.index(name) if name in FIRST else len(FIRST)
        return (rank, name)

    def __repr__(self):
        return f"<{type(self).__name__}>"
