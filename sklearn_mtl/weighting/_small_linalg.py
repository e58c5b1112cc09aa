"""Small dense linear systems in plain Python floats, shared by the exact
gradient methods' host solvers.

The systems have a handful of unknowns and are solved once per training step,
right after the step's kernels, when the interpreter's caches are cold: one
numpy call then costs several microseconds, more than the arithmetic, so the
elimination is written out on lists.
"""


def solve_small(A, b, scale):
    """Solve ``A x = b`` for small dense lists (Gaussian elimination with partial
    pivoting, plain floats); None when a pivot is below ``1e-13 * scale``
    (singular or nearly singular system). ``b`` is a list, or a tuple of
    lists for several right-hand sides at once (a tuple of solutions out).
    """
    n = len(A)
    many = isinstance(b, tuple)
    cols = list(zip(*b)) if many else [(bi,) for bi in b]
    m = len(b) if many else 1
    A = [row + list(ci) for row, ci in zip(A, cols, strict=True)]
    small = 1e-13 * scale
    for col in range(n):
        piv, best = col, abs(A[col][col])
        for r in range(col + 1, n):
            v = abs(A[r][col])
            if v > best:
                piv, best = r, v
        if best <= small:
            return None
        if piv != col:
            A[col], A[piv] = A[piv], A[col]
        rowc = A[col]
        inv = 1.0 / rowc[col]
        for r in range(col + 1, n):
            row = A[r]
            f = row[col] * inv
            if f:
                for c in range(col, n + m):
                    row[c] -= f * rowc[c]
    out = tuple(_back_substitute(A, [row[j] for row in A]) for j in range(n, n + m))
    return out if many else out[0]


def _back_substitute(U, y):
    """``x`` solving ``U x = y`` for the upper triangle of the first ``len(y)``
    columns of ``U`` (a list of rows); ``y`` is overwritten with ``x``."""
    n = len(y)
    for r in range(n - 1, -1, -1):
        row = U[r]
        acc = y[r]
        for c in range(r + 1, n):
            acc -= row[c] * y[c]
        y[r] = acc / row[r]
    return y


def spd_block_solve(S, P, q, tol):
    """``z_P`` solving ``S_PP z_P = -q_P``, or None when a pivot is ``<= tol``.

    ``S`` is a list of rows, ``P`` a list of indices, ``q`` a list indexed
    like ``S``'s rows. ``S_PP`` is a principal block of a positive definite
    matrix (taken as symmetric), so symmetric elimination (LDL^T) needs no
    pivoting. Up to four unknowns are unrolled:
    these are by far the most common sizes.
    """
    n = len(P)
    if n == 1:
        a = P[0]
        d = S[a][a]
        return [-q[a] / d] if d > tol else None
    if n == 2:
        a, b = P
        Sa = S[a]
        saa, sab = Sa[a], Sa[b]
        if not saa > tol:
            return None
        l1 = sab / saa
        d1 = S[b][b] - sab * l1
        if not d1 > tol:
            return None
        ya = -q[a]
        xb = (-q[b] - l1 * ya) / d1
        return [(ya - sab * xb) / saa, xb]
    if n == 3:
        a, b, c = P
        Sa, Sb = S[a], S[b]
        saa, sab, sac = Sa[a], Sa[b], Sa[c]
        if not saa > tol:
            return None
        l1, l2 = sab / saa, sac / saa
        d1 = Sb[b] - sab * l1
        if not d1 > tol:
            return None
        e1 = Sb[c] - sac * l1
        l3 = e1 / d1
        d2 = S[c][c] - sac * l2 - e1 * l3
        if not d2 > tol:
            return None
        ya = -q[a]
        yb = -q[b] - l1 * ya
        xc = (-q[c] - l2 * ya - l3 * yb) / d2
        xb = (yb - e1 * xc) / d1
        return [(ya - sab * xb - sac * xc) / saa, xb, xc]
    if n == 4:
        a, b, c, e = P
        Sa, Sb, Sc = S[a], S[b], S[c]
        d0, s01, s02, s03 = Sa[a], Sa[b], Sa[c], Sa[e]
        if not d0 > tol:
            return None
        l10, l20, l30 = s01 / d0, s02 / d0, s03 / d0
        d1 = Sb[b] - s01 * l10
        if not d1 > tol:
            return None
        t21 = Sb[c] - s02 * l10
        t31 = Sb[e] - s03 * l10
        l21, l31 = t21 / d1, t31 / d1
        d2 = Sc[c] - s02 * l20 - t21 * l21
        if not d2 > tol:
            return None
        t32 = Sc[e] - s03 * l20 - t31 * l21
        l32 = t32 / d2
        d3 = S[e][e] - s03 * l30 - t31 * l31 - t32 * l32
        if not d3 > tol:
            return None
        y0 = -q[a]
        y1 = -q[b] - l10 * y0
        y2 = -q[c] - l20 * y0 - l21 * y1
        x3 = (-q[e] - l30 * y0 - l31 * y1 - l32 * y2) / d3
        x2 = y2 / d2 - l32 * x3
        x1 = y1 / d1 - l21 * x2 - l31 * x3
        return [y0 / d0 - l10 * x1 - l20 * x2 - l30 * x3, x1, x2, x3]
    A = [[S[a][b] for b in P] for a in P]
    x = [-q[a] for a in P]
    for c in range(n):
        Ac = A[c]
        d = Ac[c]
        if not d > tol:
            return None
        inv = 1.0 / d
        xc = x[c]
        for r in range(c + 1, n):
            Ar = A[r]
            f = Ar[c] * inv
            if f:
                for t in range(c + 1, n):
                    Ar[t] -= f * Ac[t]
                x[r] -= f * xc
    return _back_substitute(A, x)
