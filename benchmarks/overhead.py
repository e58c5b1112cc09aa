"""Fit time of the estimator relative to a hand-written PyTorch loop.

Same network (64-64 trunk, two heads of 20), same data (30,000 x 20, one
regression and one binary task), same epochs, all variants run round-robin in
this one process; the ratio is the median over repeats of each repeat's
time / the faster of the hand loop's times at 1 and at the machine's default
number of intra-op threads in the same repeat. Every other variant runs at the
machine's default (the estimator then chooses its own, see
sklearn_mtl._threads). Repeat r uses seed r for every
variant, so the final losses show the seed-to-seed spread. Times are whole ``fit`` calls
(setup included) divided by the epochs. With the benchmark extra installed,
skorch (the documented way) and Keras 3 (torch backend) run in the same rounds.

Run: python benchmarks/overhead.py [--quick]
"""

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import frameworks
import torch

N_ROWS = 30_000
EPOCHS = {32: 2, 256: 4, 4096: 12}


def measure(batch_sizes=(32, 256, 4096), repeats=5, n=N_ROWS, epochs=None, others=True,
            device="cpu", log=print):
    """Rows of (batch, variant, ms per epoch, ratio to the hand loop, final loss);
    plus the messages of the variants that were left out."""
    epochs = dict(EPOCHS, **(epochs or {}))
    X, Y = C.make_data(n)
    notes = []
    extra = {}
    if others:
        for name, status, fit in (("skorch (documented way)", frameworks.skorch_status,
                                   frameworks.skorch_fit),
                                  ("Keras 3 (torch backend)", frameworks.keras_status,
                                   frameworks.keras_fit)):
            ok, message = status()
            (extra.__setitem__(name, fit) if ok else None)
            notes.append(f"{name}: {message}" + ("" if ok else " -- left out"))
    rows = []
    default_threads = torch.get_num_threads()
    for batch in batch_sizes:
        E = epochs[batch]

        def hand(seed, batch=batch, E=E, threads=default_threads):
            torch.set_num_threads(threads)
            try:
                model = C.hand_loop(X, Y, batch, E, seed=seed, device=device)
                _sync(device)
            finally:
                torch.set_num_threads(default_threads)
            return _HandOutputs(model, device)

        def ours(seed, batch=batch, E=E, **params):
            model = C.estimator(batch, E, seed=seed, device=device, **params).fit(X, Y)
            _sync(device)
            return _EstimatorOutputs(model, Y)

        hands = {f"hand-written loop, {n} thread{'s' * (n > 1)}":
                 functools.partial(hand, threads=n)
                 for n in sorted({1, default_threads})}
        # By default the estimator holds out 10% of the rows for early stopping; without
        # it, it trains on the same rows as the hand loop (the like-for-like loss).
        variants = {**hands, "sklearn-mtl": ours,
                    "sklearn-mtl, early_stopping=False": functools.partial(
                        ours, early_stopping=False)}
        if device == "cpu":
            for name, fit in extra.items():
                variants[name] = (lambda seed, fit=fit, batch=batch, E=E:
                                  fit(X, Y, batch, E, seed=seed))

        def final(name, result):
            return C.final_loss(result.outputs(X), Y,
                                logits=not isinstance(result, _EstimatorOutputs))

        times, losses = C.interleave_seeded(variants, repeats, after=final)
        # The baseline of each repeat: the faster of the hand loops in that repeat.
        times["hand-written loop, faster"] = [min(t) for t in zip(*(times[h] for h in hands))]
        for name in variants:
            rows.append((batch, name, 1000 * C.median(times[name]) / E,
                         C.ratio_stats(times, name, "hand-written loop, faster"), losses[name],
                         E))
            log(f"  batch {batch:5d}  {name:26s} {rows[-1][2]:9.1f} ms/epoch  "
                f"{rows[-1][3]:.2f}x  final loss {_loss_text(losses[name])}")
    return rows, notes


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _HandOutputs:
    def __init__(self, model, device):
        self.model, self.device = model, device

    def outputs(self, X):
        return C.hand_predict(self.model, X, self.device)


class _EstimatorOutputs:
    def __init__(self, model, Y):
        self.model, self.Y = model, Y

    def outputs(self, X):
        return C.estimator_outputs(self.model, X, self.Y)


def _loss_text(values):
    return f"{C.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def table(rows):
    return C.markdown_table(
        ["batch", "variant", "epochs", "ms / epoch (median)", "time vs hand loop (median ratio)",
         "final training loss: median [min, max] over seeds"],
        [(b, name, E, f"{ms:.1f}", f"{ratio:.2f}x", _loss_text(losses))
         for b, name, ms, ratio, losses, E in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and rows")
    parser.add_argument("--no-others", action="store_true", help="only the hand loop and ours")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, machine default of {torch.get_num_threads()} "
          f"intra-op threads; load average {os.getloadavg()[0]:.2f} before")
    rows, notes = measure(repeats=2 if args.quick else 5, n=5000 if args.quick else N_ROWS,
                          others=not args.no_others)
    for note in notes:
        print(note)
    print(f"load average {os.getloadavg()[0]:.2f} after")
    print(table(rows))


if __name__ == "__main__":
    main()
