"""The cost of float64 inference: the network's forward pass in float64 (what ``predict``
runs, so that predictions do not depend on the number of rows predicted at once) against
the same pass in float32, and the batch-size dependence of each.

The estimator is the classic two-head network trained for 2 epochs on 30,000 rows; the
forward passes run on 1 row (latency) and 100,000 rows (throughput), interleaved, one
intra-op thread. The last column is the largest relative difference between a row's
output predicted alone and the same row predicted within the 100,000-row call.

Run: python benchmarks/predict_precision.py [--quick]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import numpy as np
import torch


def _median_time(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return C.median(samples)


def measure(quick=False):
    torch.set_num_threads(1)
    X, Y = C.make_data(30_000)
    big, _ = C.make_data(20_000 if quick else 100_000, seed=1)
    big = big.astype(np.float32)
    net = C.estimator(256, 2).fit(X, Y).net_
    rows = []
    for dtype in (torch.float32, torch.float64):
        def forward(data, dtype=dtype):
            return net._forward_rows(torch.from_numpy(data), dtype).numpy()

        whole = forward(big)
        alone = np.concatenate([forward(big[i:i + 1]) for i in range(200)])
        drift = np.max(np.abs(alone - whole[:200]) / np.maximum(np.abs(whole[:200]), 1e-12))
        latency = _median_time(lambda: forward(big[:1]), 50 if quick else 200)
        throughput = big.shape[0] / _median_time(lambda: forward(big), 3 if quick else 7)
        rows.append((str(dtype).replace("torch.", ""), f"{1e3 * latency:.3f}",
                     f"{throughput:,.0f}", f"{drift:.1e}"))
        print("  " + "  ".join(rows[-1]))
    return C.markdown_table(
        ["forward pass", "1 row: latency (ms, median)",
         f"{big.shape[0]:,} rows: rows / s (median)",
         "max relative difference, 1 row alone vs within the big call"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    print(measure(args.quick))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
