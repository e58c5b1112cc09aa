"""One fit in a fresh process, for time per epoch and peak memory (run by run.py).

Prints one JSON line. Memory figures are resident set sizes: ``baseline``
after the imports and a warm-up fit on 64 rows (so torch's one-time
allocations are in it), ``peak`` the high-water mark since the baseline
(VmHWM, reset through /proc/self/clear_refs); ``extra = peak - baseline`` is what the data and the fit added, the
data included.

Usage: python benchmarks/_probe.py {estimator,hand} N FEATURES TASKS BATCH EPOCHS
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import torch


def current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak():
    """Restart the kernel's high-water mark at the current RSS (Linux >= 4.0); else the
    peak stays the lifetime one, which includes the import-time peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def run(variant, n, d, T, batch, epochs):
    torch.set_num_threads(1)
    fit = ((lambda X, Y, E: C.estimator(batch, E).fit(X, Y)) if variant == "estimator"
           else (lambda X, Y, E: C.hand_loop(X, Y, batch, E)))
    Xw, Yw = C.make_data(64, d, T, seed=1)
    fit(Xw, Yw, 1)
    del Xw, Yw
    baseline = current_rss()
    reset = reset_peak()
    X, Y = C.make_data(n, d, T)
    data_bytes = X.nbytes
    start = time.perf_counter()
    fit(X, Y, epochs)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    return {
        "variant": variant, "n": n, "features": d, "tasks": T, "batch": batch,
        "epochs": epochs, "seconds_per_epoch": seconds / epochs, "data_bytes": data_bytes,
        "baseline_rss": baseline, "peak_rss": peak, "extra": peak - baseline,
        "peak_since_baseline": reset, "X_dtype": str(X.dtype), "targets_bytes": int(Y.memory_usage(deep=True).sum()),
    }


if __name__ == "__main__":
    variant, *numbers = sys.argv[1:]
    n, d, T, batch, epochs = map(int, numbers)
    print(json.dumps(run(variant, n, d, T, batch, epochs)))
