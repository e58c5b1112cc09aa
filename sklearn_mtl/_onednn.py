"""Batched float32 products through oneDNN on the CPUs where that is faster and
keeps float32.

A stacked run spends most of its time in ``torch.bmm``/``torch.baddbmm`` of
small matrices (members x batch x 64 x 64), and a single fit at a large batch
in products of (batch x 64) by (64 x 64). torch sends float32 products to MKL,
which takes a generic AVX2 code path on CPUs not made by Intel; on an AMD EPYC,
oneDNN computes the same products about twice as fast (``benchmarks/RESULTS.md``).
torch only routes float32 products to oneDNN when
``torch.backends.mkldnn.matmul.fp32_precision`` is ``"bf16"``, which *allows*
oneDNN to compute in bfloat16: on CPUs with bfloat16 matrix units (AMX) it
does, and the products lose about three decimal digits; on the others it keeps
float32 arithmetic. So the route is taken only on AMD CPUs where
:func:`onednn_keeps_float32` finds, by computing, that the products under that
setting are as accurate as float32 ones, and only for steps large enough to
gain (a oneDNN call costs about 10 microseconds more than an MKL one). On
Intel CPUs MKL's own kernels are used, as before. The choice depends on the
CPU and the step's size only, never on a timing, so that a run's arithmetic is
the same every time. The setting is process-wide: :class:`OneDNNProducts` sets
it around a stacked run's epochs or a fit's loop and restores the caller's value
afterwards.
"""

import functools
import platform

import torch

#: Training steps of at least this many multiply-adds (members x batch rows x
#: weights) use oneDNN; below it MKL is about as fast or faster (the measured
#: crossover is at 6M at one thread and 14M at two; one threshold for both, so
#: that the thread count, which is chosen by timing, does not change the route).
ONEDNN_STEP_MACS = 10 << 20

#: The shapes the probe multiplies: (batch, rows, inner, columns), those of a
#: stacked step of the default network, and a larger one.
_PROBE_SHAPES = ((40, 64, 20, 64), (40, 64, 64, 64), (16, 64, 64, 2), (8, 256, 128, 128))
#: A product counts as float32-accurate when its largest error against float64,
#: relative to the largest entry, is within this many times MKL's float32 one
#: (or under 1e-5); bfloat16 arithmetic is about a thousand times off.
_ERROR_RATIO, _FLOOR = 8.0, 1e-5


def _setting():
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision"):
        return None
    return matmul


def _relative_error(result, exact):
    return float((result.double() - exact).abs().max() / exact.abs().max())


def float32_accurate(products, reference=torch.baddbmm):
    """Whether each of ``products`` (functions of ``(bias, a, b)`` computing
    ``bias + a @ b`` batched) is, on the probe shapes, as accurate as
    ``reference`` computes in float32."""
    generator = torch.Generator().manual_seed(0)
    for k, n, inner, m in _PROBE_SHAPES:
        a = torch.randn(k, n, inner, generator=generator)
        b = torch.randn(k, inner, m, generator=generator)
        bias = torch.randn(k, 1, m, generator=generator)
        exact = torch.baddbmm(bias.double(), a.double(), b.double())
        bound = _ERROR_RATIO * max(_relative_error(reference(bias, a, b), exact),
                                   _FLOOR / _ERROR_RATIO)
        if not all(_relative_error(product(bias, a, b), exact) <= bound
                   for product in products):
            return False
    return True


#: The products of a stacked step, as the probe runs them: fused, plain, and
#: with a transposed operand (the backward pass's layouts).
_STEP_PRODUCTS = (torch.baddbmm,
                  lambda bias, a, b: torch.bmm(a, b) + bias,
                  lambda bias, a, b: torch.bmm(a.mT.contiguous().mT, b) + bias)


def _cpu_vendor():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()  # on Windows it names the vendor


@functools.lru_cache(maxsize=1)
def onednn_pays():
    """Whether this CPU is one where the route is taken: an AMD x86-64 CPU whose
    oneDNN float32 products keep float32 accuracy."""
    return "AuthenticAMD" in _cpu_vendor() and onednn_keeps_float32()


@functools.lru_cache(maxsize=1)
def onednn_keeps_float32():
    """Whether, on this CPU, float32 batched products routed to oneDNN (the
    ``"bf16"`` setting) are as accurate as MKL's float32 ones."""
    matmul = _setting()
    if matmul is None or not torch.backends.mkldnn.is_available():
        return False
    previous = matmul.fp32_precision

    def mkl(bias, a, b):
        matmul.fp32_precision = "none"
        try:
            return torch.baddbmm(bias, a, b)
        finally:
            matmul.fp32_precision = "bf16"

    try:
        matmul.fp32_precision = "bf16"
        return float32_accurate(_STEP_PRODUCTS, reference=mkl)
    except RuntimeError:
        return False
    finally:
        matmul.fp32_precision = previous


class OneDNNProducts:
    """Routes batched float32 products to oneDNN while :meth:`use` says so, on the
    CPUs where that pays (:func:`onednn_pays`); restores the caller's setting on
    exit. A no-op on other devices and CPUs."""

    def __init__(self, device):
        self.enabled = (torch.device(device).type == "cpu" and _setting() is not None
                        and onednn_pays())
        self._on = None

    def __enter__(self):
        if self.enabled:
            self.previous = _setting().fp32_precision
        return self

    def use(self, step_macs):
        """Route this epoch's products by the size of its steps."""
        on = self.enabled and step_macs >= ONEDNN_STEP_MACS
        if on != self._on:
            self._on = on
            if self.enabled:
                _setting().fp32_precision = "bf16" if on else self.previous

    def __exit__(self, *exc):
        if self.enabled:
            _setting().fp32_precision = self.previous
        self._on = None
