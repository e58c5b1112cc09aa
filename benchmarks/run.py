"""The benchmark suite: prints its tables and writes benchmarks/RESULTS.md.

Sections: training time relative to a hand-written PyTorch loop (and to skorch
and Keras 3 when installed), intra-op threads, CPU options (bf16, compile),
scaling with peak memory (one fresh process per configuration), prediction
latency and throughput, and a GPU section that runs only when CUDA is present.
Every comparison runs its variants round-robin in one process and reports
medians over repeats. About 10-15 minutes on a 2-core machine.

Run: python benchmarks/run.py [--quick] [--output PATH]
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Keras reads its backend once, at its first import.
os.environ.setdefault("KERAS_BACKEND", "torch")

import _common as C
import numpy as np
import overhead
import torch

COMMAND = "python benchmarks/run.py"


def log(message=""):
    print(message, flush=True)


# ----------------------------------------------------------------------------
# Machine


def machine_lines():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for module in ("skorch", "sklearn", "keras"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        (f"- CPU: {cpu}, {os.cpu_count()} logical cores; torch default intra-op threads: "
        f"{torch.get_num_threads()}; GPU: {gpu}"),
        f"- Versions: {', '.join(versions)}",
        (f"- Load average at start (other processes share this machine): "
        f"{', '.join(f'{x:.2f}' if isinstance(x, float) else x for x in load)}"),
    ]


# ----------------------------------------------------------------------------
# Threads


def threads_section(quick):
    import sklearn_mtl._net as engine

    default = torch.get_num_threads()
    n = 2000 if quick else 10_000
    X, Y = C.make_data(n)
    rows = []
    for batch in (256, 4096):
        E = 1 if batch == 256 else 4

        def hand_at(threads, batch=batch, E=E):
            torch.set_num_threads(threads)
            try:
                return C.hand_loop(X, Y, batch, E)
            finally:
                torch.set_num_threads(default)

        def ours(batch=batch, E=E):
            return C.estimator(batch, E).fit(X, Y)

        def ours_machine_threads(batch=batch, E=E):
            saved = engine.MultiTaskNet._wanted_threads
            engine.MultiTaskNet._wanted_threads = lambda self, X: default
            try:
                return C.estimator(batch, E).fit(X, Y)
            finally:
                engine.MultiTaskNet._wanted_threads = saved

        variants = {
            f"hand loop, {default} threads (default)": lambda: hand_at(default),
            "hand loop, 1 thread": lambda: hand_at(1),
            "sklearn-mtl, default (n_threads='auto')": ours,
            f"sklearn-mtl forced to {default} threads": ours_machine_threads,
        }
        times, _ = C.interleave(variants, 2 if quick else 3)
        base = next(iter(variants))
        for name in variants:
            rows.append((batch, name, f"{1000 * C.median(times[name]) / E:.1f}",
                         f"{C.ratio_stats(times, name, base):.2f}x"))
            log(f"  batch {batch:5d} {name:42s} {rows[-1][2]:>9s} ms/epoch {rows[-1][3]}")
    return n, default, C.markdown_table(
        ["batch", "variant", "ms / epoch", f"vs hand loop at {default} threads"], rows)


# ----------------------------------------------------------------------------
# CPU options


def options_section(quick):
    torch.set_num_threads(1)
    n = 5000 if quick else 30_000
    X, Y = C.make_data(n)
    batch, E = 256, 3
    variants = {
        "float32 (default)": lambda: C.estimator(batch, E).fit(X, Y),
        "precision='bf16'": lambda: C.estimator(batch, E, precision="bf16").fit(X, Y),
    }
    times, results = C.interleave(variants, 2 if quick else 3)
    rows = []
    for name in variants:
        loss = C.final_loss(C.estimator_outputs(results[name], X, Y), Y, logits=False)
        rows.append((name, f"{1000 * C.median(times[name]) / E:.1f}",
                     f"{C.ratio_stats(times, name, 'float32 (default)'):.2f}x", f"{loss:.4f}"))
        log(f"  {name:22s} {rows[-1][1]:>8s} ms/epoch {rows[-1][2]}  loss {rows[-1][3]}")
    # compile: one run each; the first epoch carries the compilation.
    eager = C.estimator(batch, E).fit(X, Y)
    start = time.perf_counter()
    compiled = C.estimator(batch, E, compile=True).fit(X, Y)
    total = time.perf_counter() - start
    eager_epoch = np.median([e["dur"] for e in eager.history_[1:]])
    compiled_epoch = np.median([e["dur"] for e in compiled.history_[1:]])
    loss = C.final_loss(C.estimator_outputs(compiled, X, Y), Y, logits=False)
    rows.append(("compile=True (epochs 2+)", f"{1000 * compiled_epoch:.1f}",
                 f"{compiled_epoch / eager_epoch:.2f}x (vs eager epochs 2+)", f"{loss:.4f}"))
    rows.append(("compile=True, first epoch", f"{1000 * compiled.history_[0]['dur']:.1f}",
                 f"whole fit {total:.1f} s", ""))
    log(f"  compile: epochs 2+ {1000 * compiled_epoch:.1f} ms vs eager {1000 * eager_epoch:.1f} "
        f"ms; first epoch {compiled.history_[0]['dur']:.1f} s")
    return n, batch, E, C.markdown_table(
        ["option", "ms / epoch", "vs float32 eager", "final training loss"], rows)


# ----------------------------------------------------------------------------
# Scaling and memory


def probe(variant, n, d, T, batch, epochs):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_probe.py"), variant, str(n), str(d), str(T),
         str(batch), str(epochs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling_section(quick):
    d, T, batch = 100, 5, 256
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    rows, results = [], []
    for n in sizes:
        epochs = 1 if n >= 1_000_000 else (2 if n >= 100_000 else 4)
        for variant in ("hand", "estimator"):
            r = probe(variant, n, d, T, batch, epochs)
            results.append(r)
            mb = 1e6
            rows.append((
                f"{n:,}", "sklearn-mtl" if variant == "estimator" else "hand-written loop",
                epochs, f"{r['seconds_per_epoch']:.2f}", f"{r['data_bytes'] / mb:.0f}",
                f"{r['baseline_rss'] / mb:.0f}", f"{r['peak_rss'] / mb:.0f}",
                f"{r['extra'] / mb:.0f}", f"{r['extra'] / r['data_bytes']:.2f}x"))
            log("  " + "  ".join(str(c) for c in rows[-1]))
    table = C.markdown_table(
        ["rows", "variant", "epochs", "s / epoch", "X float32 (MB)", "baseline RSS (MB)",
         "peak RSS (MB)", "peak - baseline (MB)", "(peak - baseline) / X"], rows)
    return d, T, batch, table, results


# ----------------------------------------------------------------------------
# Prediction


def prediction_section(quick):
    torch.set_num_threads(1)
    X, Y = C.make_data(30_000)
    big, _ = C.make_data(20_000 if quick else 100_000, seed=1)
    model = C.estimator(256, 2).fit(X, Y)
    hand = C.hand_loop(X, Y, 256, 2)
    one = X[:1]
    calls = 50 if quick else 200

    def latency(fn):
        fn()
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return C.median(samples)

    def throughput(fn):
        fn()
        samples = []
        for _ in range(3 if quick else 5):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return big.shape[0] / C.median(samples)

    rows = [
        ("sklearn-mtl `predict`", f"{1e3 * latency(lambda: model.predict(one)):.2f}",
         f"{throughput(lambda: model.predict(big)):,.0f}"),
        ("sklearn-mtl `predict_proba`", f"{1e3 * latency(lambda: model.predict_proba(one)):.2f}",
         f"{throughput(lambda: model.predict_proba(big)):,.0f}"),
        ("hand model forward (torch, no_grad)",
         f"{1e3 * latency(lambda: C.hand_predict(hand, one)):.2f}",
         f"{throughput(lambda: C.hand_predict(hand, big)):,.0f}"),
    ]
    for row in rows:
        log("  " + "  ".join(row))
    return big.shape[0], C.markdown_table(
        ["call", "1 row: latency (ms, median)", f"{big.shape[0]:,} rows: rows / s (median)"],
        rows)


# ----------------------------------------------------------------------------
# GPU


def gpu_section(quick):
    if not torch.cuda.is_available():
        message = ("GPU section skipped: torch.cuda.is_available() is False on this machine "
                   f"(torch {torch.__version__}).")
        log("  " + message)
        return message
    device = "cuda"
    name = torch.cuda.get_device_name(0)
    parts = [f"Device: {name}."]
    # 1. Ratios to the hand loop, data resident on the GPU for both.
    rows, _ = overhead.measure(repeats=2 if quick else 5, others=False, device=device, log=log)
    parts += ["", "Training time vs a hand-written loop on the GPU (data on the GPU for both):",
              "", overhead.table(rows)]
    # 2. GPU-resident data vs per-batch host-to-device copies.
    n = 200_000 if quick else 1_000_000
    X, Y = C.make_data(n, 100, 5)
    copy_rows = []
    for batch in (256, 4096):
        E = 1 if batch == 256 else 3

        def resident(batch=batch, E=E):
            model = C.estimator(batch, E, device=device).fit(X, Y)
            torch.cuda.synchronize()
            return model

        def host_chunks(batch=batch, E=E):
            est = C.estimator(batch, E, device=device)
            est._data_device = lambda X_t, y_t, device: "cpu"  # force the host path
            model = est.fit(X, Y)
            torch.cuda.synchronize()
            return model

        def hand_copies(batch=batch, E=E):
            model = C.hand_loop_host_batches(X, Y, batch, E, device=device)
            torch.cuda.synchronize()
            return model

        variants = {"sklearn-mtl, data resident on the GPU": resident,
                    "sklearn-mtl, host data (pinned chunks, non_blocking)": host_chunks,
                    "hand loop, per-batch .to(device)": hand_copies}
        times, _ = C.interleave(variants, 2 if quick else 3)
        for variant in variants:
            copy_rows.append((batch, variant, f"{1000 * C.median(times[variant]) / E:.1f}",
                              f"{C.ratio_stats(times, variant, next(iter(variants))):.2f}x"))
            log("  " + "  ".join(str(c) for c in copy_rows[-1]))
    parts += ["", f"Data placement ({n:,} x 100, 5 tasks):", "",
              C.markdown_table(["batch", "variant", "ms / epoch", "vs resident"], copy_rows)]
    # 3. bf16 autocast on/off, the classic network and a wide one.
    bf_rows = []
    for label, sizes in (("64-64", (64, 64)), ("1024-1024", (1024, 1024))):
        def fp32(sizes=sizes):
            model = C.estimator(4096, 3, device=device, hidden_layer_sizes=sizes).fit(X, Y)
            torch.cuda.synchronize()
            return model

        def bf16(sizes=sizes):
            model = C.estimator(4096, 3, device=device, hidden_layer_sizes=sizes,
                                precision="bf16").fit(X, Y)
            torch.cuda.synchronize()
            return model

        times, results = C.interleave({"float32": fp32, "bf16": bf16}, 2 if quick else 3)
        for variant in ("float32", "bf16"):
            bf_rows.append((label, variant, f"{1000 * C.median(times[variant]) / 3:.1f}",
                            f"{C.ratio_stats(times, variant, 'float32'):.2f}x",
                            f"{results[variant].history_[-1, 'train_loss']:.4f}"))
            log("  " + "  ".join(str(c) for c in bf_rows[-1]))
    parts += ["", "bf16 autocast (batch 4096):", "",
              C.markdown_table(["trunk", "precision", "ms / epoch", "vs float32",
                                "final train_loss"], bf_rows)]
    return "\n".join(parts)


# ----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller data and fewer repeats (a smoke test; numbers not for "
                             "RESULTS.md)")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--only", choices=["threads"],
                        help="print one section's table and stop (nothing is written)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.only == "threads":
        log(f"load average {os.getloadavg()[0]:.2f} before")
        print(threads_section(quick)[2])
        log(f"load average {os.getloadavg()[0]:.2f} after")
        return
    started = time.perf_counter()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_lines()
    default_threads = torch.get_num_threads()
    for line in machine:
        log(line)

    log("\n## Training time vs a hand-written PyTorch loop (CPU)")
    over_rows, notes = overhead.measure(repeats=2 if quick else 7,
                                        n=5000 if quick else overhead.N_ROWS, log=log)
    for note in notes:
        log("  " + note)

    log("\n## Intra-op threads")
    threads_n, _, threads_table = threads_section(quick)

    log("\n## CPU options: bf16 autocast, torch.compile")
    opt_n, opt_batch, opt_epochs, options_table = options_section(quick)
    torch.set_num_threads(default_threads)

    log("\n## Scaling and peak memory (one fresh process per row, 1 thread)")
    d, T, scale_batch, scaling_table, scaling = scaling_section(quick)

    log("\n## Prediction (1 thread)")
    n_big, prediction_table = prediction_section(quick)
    torch.set_num_threads(default_threads)

    log("\n## GPU")
    gpu_text = gpu_section(quick)

    minutes = (time.perf_counter() - started) / 60
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    headline = _headline(over_rows, scaling)
    text = "\n".join([
        "# sklearn-mtl benchmark results",
        "",
        "```",
        COMMAND + (" --quick" if quick else ""),
        "```",
        "",
        (f"One run of the suite, {when}, {minutes:.1f} minutes. Load average at the end: "
        f"{load_end}."),
        *machine,
        "",
        ("Every ratio compares variants that ran round-robin in this one run (or, for memory, "
        "one fresh process per row); each figure is the median over the repeats. Times are "
        "whole `fit` calls, setup included, divided by the epochs."),
        "",
        "## Headline",
        "",
        *headline,
        "",
        "## Training time vs a hand-written PyTorch loop (CPU)",
        "",
        (f"The classic two-head network (shared 64-64 ReLU trunk, one 20-unit hidden layer per "
        f"head; a regression task (MSE) and a binary one (BCE)), {overhead.N_ROWS:,} x 20 "
        "float32 rows, Adam lr=1e-3. The hand-written loop is the plain loop a user writes: "
        "tensors made once, one `randperm` per epoch, fancy-indexed batches, default "
        "`torch.optim.Adam`, `zero_grad`/`backward`/`step` (benchmarks/_common.py). It runs "
        "at 1 intra-op thread and at the machine's default, and each ratio is against the "
        "faster of the two in the same repeat; every other variant runs at the machine's "
        "default (the estimator chooses its own threads, see the threads table). Repeat r uses seed r for every variant; the final "
        "training loss (sum over tasks of MSE and log loss on the training data, median and "
        "range over the seeds) shows that the variants train the same model to within the "
        "seed-to-seed spread (Keras initialises its layers differently, with Glorot)."),
        "",
        *(f"- {note}" for note in notes),
        "",
        overhead.table(over_rows),
        "",
        "## Intra-op threads",
        "",
        (f"{threads_n:,} rows, same network, the machine's default of {default_threads} "
        "threads against 1. For networks this small, each op is microseconds of work and "
        "extra threads add synchronisation; when other processes keep the cores busy, a "
        "thread that is descheduled stalls every op. `MultiTaskNet(n_threads='auto')`, the "
        "estimator's default, therefore trains on 1 thread when the per-step work (batch "
        "rows x weights) is under 2^26 multiply-adds and restores the caller's setting after "
        "`fit`; above that it leaves the setting alone."),
        "",
        threads_table,
        "",
        "## CPU options: bf16 autocast and torch.compile",
        "",
        (f"{opt_n:,} rows, batch {opt_batch}, {opt_epochs} epochs, 1 thread. `compile` stays "
        "off by default: it does not make the epochs faster on this CPU and its first epoch "
        "carries the compilation. bf16 autocast is for GPUs; this CPU has no bfloat16 "
        "instructions."),
        "",
        options_table,
        "",
        "## Scaling and peak memory",
        "",
        (f"{d} float32 features, {T} tasks (3 regression, 2 binary), batch {scale_batch}, "
        "1 thread, each row a fresh process (benchmarks/_probe.py). Baseline RSS: after the "
        "imports and a 64-row warm-up fit (torch's one-time allocations). Peak RSS: the "
        "high-water mark since the baseline (VmHWM, reset through /proc/self/clear_refs). "
        "`peak - baseline` therefore counts the data "
        "themselves (X, Y), the training table, the targets and everything the fit "
        "allocated; the target for the 1,000,000-row fit is at most 2x the float32 X. At "
        "small n fixed costs dominate the ratio."),
        "",
        scaling_table,
        "",
        "## Prediction",
        "",
        ("The estimator trained above (30,000 rows); `predict` includes input validation, "
        "decoding to the original labels and scale, and building the DataFrame. The "
        f"{n_big:,}-row call runs in batches of 8,192 rows on the training device."),
        "",
        prediction_table,
        "",
        "## GPU",
        "",
        gpu_text,
        "",
    ])
    kept = _foreign_sections(args.output, text)
    with open(args.output, "w") as f:
        f.write(text.rstrip() + "\n" + "".join("\n" + section for section in kept))
    log(f"\nwrote {args.output} ({minutes:.1f} min)"
        + (f"; kept {len(kept)} section(s) written by other scripts" if kept else ""))


def _sections(text):
    """(preamble, [(title, section text)]) of a markdown file split at '## ' headings."""
    parts = re.split(r"(?m)^(?=## )", text)
    preamble, sections = parts[0], []
    for part in parts[1:]:
        sections.append((part.splitlines()[0][3:].strip(), part.rstrip() + "\n"))
    return preamble, sections


def _foreign_sections(path, ours):
    """The sections of the existing file that this script does not write (other
    benchmarks, e.g. benchmarks/weighting.py --write, keep theirs in the same file)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        _, existing = _sections(f.read())
    mine = {title for title, _ in _sections(ours)[1]}
    return [body for title, body in existing if title not in mine]


def _headline(over_rows, scaling):
    lines = []
    by = {(b, name): (ratio, overhead._loss_text(losses))
          for b, name, ms, ratio, losses, E in over_rows}
    hand_loss = {}
    for (b, name), (ratio, loss) in by.items():
        if name.startswith("hand-written loop"):
            hand_loss.setdefault(b, loss)
    for b in sorted({b for b, *_ in over_rows}):
        if (b, "sklearn-mtl") in by:
            ratio, loss = by[(b, "sklearn-mtl")]
            others = ", ".join(f"{name} {r:.2f}x" for (bb, name), (r, _) in by.items()
                               if bb == b and name != "sklearn-mtl"
                               and not name.startswith("hand-written loop"))
            lines.append(f"- batch {b}: sklearn-mtl trains in **{ratio:.2f}x** the time of the "
                         f"faster hand-written loop (final loss {loss} vs {hand_loss[b]}, median [min, max] "
                         "over seeds)"
                         + (f"; {others}" if others else "") + ".")
    for r in scaling:
        if r["variant"] == "estimator" and r["n"] >= 1_000_000:
            lines.append(
                f"- {r['n']:,} x {r['features']} float32, {r['tasks']} tasks: peak memory of "
                f"the fit {r['extra'] / 1e6:.0f} MB above the baseline = "
                f"**{r['extra'] / r['data_bytes']:.2f}x** the float32 X "
                f"({r['data_bytes'] / 1e6:.0f} MB), data included; "
                f"{r['seconds_per_epoch']:.1f} s per epoch.")
    return lines


if __name__ == "__main__":
    main()
