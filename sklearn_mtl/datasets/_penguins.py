"""The Palmer penguins table as a multi-task problem (from the ``palmerpenguins`` package)."""

from sklearn.utils import Bunch

FEATURE_NAMES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "island", "year")
TARGET_NAMES = ("species", "sex", "body_mass_g")

_INSTALL_HINT = (
    "load_penguins needs the optional 'palmerpenguins' package, which ships the "
    "data. Install it with `pip install palmerpenguins` or "
    '`pip install "sklearn-mtl[examples]"`.'
)

_DESCR = """\
Palmer penguins
---------------

344 adult penguins of three species (Adelie, Chinstrap, Gentoo) observed on
three islands (Biscoe, Dream, Torgersen) of the Palmer Archipelago,
Antarctica, in 2007-2009.

Features: bill_length_mm, bill_depth_mm, flipper_length_mm (float, 2 missing
each, in the same two rows), island (string, 3 values), year (int).
Targets: species (3 classes, complete), sex ("female"/"male", 11 missing),
body_mass_g (regression, 2 missing).

Source: the palmerpenguins package (Horst AM, Hill AP, Gorman KB (2020).
palmerpenguins: Palmer Archipelago (Antarctica) penguin data. R package,
doi:10.5281/zenodo.3960218; Python port by M. C. Nakhaee). Data collected and
made available by Dr. Kristen Gorman and the Palmer Station, Antarctica LTER,
a member of the Long Term Ecological Research Network: Gorman KB, Williams TD,
Fraser WR (2014). Ecological sexual dimorphism and environmental variability
within a community of Antarctic penguins (genus Pygoscelis). PLoS ONE 9(3):
e90081. doi:10.1371/journal.pone.0090081. License: CC0.
"""


def load_penguins(return_X_y=True, drop_unlabeled=False):
    """Load the Palmer penguins data as three tasks: species, sex and body mass.

    The table is read from the CSV file shipped inside the optional
    ``palmerpenguins`` package; nothing is downloaded. It makes a small
    real-world multi-task problem mixing a 3-class target, a binary target
    with missing labels and a regression target.

    Parameters
    ----------
    return_X_y : bool, default=True
        If True, return ``(X, Y)``. If False, return a
        :class:`~sklearn.utils.Bunch` (see Returns). Defaults to True, unlike
        scikit-learn's loaders, because ``(X, Y)`` is what multi-task
        estimators take.
    drop_unlabeled : bool, default=False
        If True, drop the rows where any target is missing (the 11 rows
        without ``sex``, which include the 2 without ``body_mass_g``),
        leaving 333 rows. The index is kept, not reset, so rows can be traced
        back to the full table. By default all 344 rows are kept: estimators
        that mask missing labels can use the partially labelled rows.

    Returns
    -------
    X : pandas.DataFrame of shape (344, 5)
        ``bill_length_mm``, ``bill_depth_mm``, ``flipper_length_mm``
        (float64, 2 missing values each: impute them, e.g. with
        :class:`~sklearn.impute.SimpleImputer` in a pipeline), ``island``
        (strings: ``"Biscoe"``, ``"Dream"``, ``"Torgersen"``; encode it, e.g.
        with :class:`~sklearn.preprocessing.OneHotEncoder`) and ``year``
        (int64, 2007 to 2009).
    Y : pandas.DataFrame of shape (344, 3)
        ``species`` (strings: ``"Adelie"``, ``"Chinstrap"``, ``"Gentoo"``, no
        missing value), ``sex`` (strings ``"female"`` / ``"male"``, 11 missing
        as ``NaN``) and ``body_mass_g`` (float64 grams, 2 missing as ``NaN``).
    bunch : sklearn.utils.Bunch
        Only when ``return_X_y=False``, with ``data`` (X), ``target`` (Y),
        ``frame`` (X and Y side by side), ``feature_names``,
        ``target_names`` and ``DESCR``.

    The string columns have pandas' default string dtype (``str`` with
    pandas 3, ``object`` with pandas 2). Every call reads the file afresh and
    returns new frames that share no memory, so they can be modified freely.

    Raises
    ------
    ImportError
        If ``palmerpenguins`` is not installed.

    Notes
    -----
    Data: Gorman KB, Williams TD, Fraser WR (2014). Ecological sexual
    dimorphism and environmental variability within a community of Antarctic
    penguins (genus *Pygoscelis*). PLoS ONE 9(3): e90081, collected by the
    Palmer Station, Antarctica LTER. Package: Horst AM, Hill AP, Gorman KB
    (2020). palmerpenguins: Palmer Archipelago (Antarctica) penguin data,
    doi:10.5281/zenodo.3960218. Released under CC0.

    Examples
    --------
    >>> from sklearn_mtl.datasets import load_penguins
    >>> X, Y = load_penguins()  # doctest: +SKIP
    >>> X.shape, Y.shape  # doctest: +SKIP
    ((344, 5), (344, 3))
    """
    try:
        from palmerpenguins import load_penguins as _read_penguins
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    # Read afresh at each call (344 rows, a few ms) rather than caching, so
    # that no two returned frames can ever share a buffer.
    frame = _read_penguins()
    frame = frame[list(FEATURE_NAMES) + list(TARGET_NAMES)]
    if drop_unlabeled:
        frame = frame.dropna(subset=list(TARGET_NAMES))
    # Explicit deep copies: without copy-on-write (pandas 2), column
    # selections can be views of the same block.
    X = frame[list(FEATURE_NAMES)].copy()
    Y = frame[list(TARGET_NAMES)].copy()
    if return_X_y:
        return X, Y
    return Bunch(
        data=X,
        target=Y,
        frame=frame.copy(),
        feature_names=list(FEATURE_NAMES),
        target_names=list(TARGET_NAMES),
        DESCR=_DESCR,
    )
