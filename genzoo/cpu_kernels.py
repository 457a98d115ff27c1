"""genzoo's compiled CPU kernels (``genzoo/csrc/``): the weight gradient of a depthwise
convolution (NVAE's decoder cell's) on channels_last tensors (``depthwise.cpp``; the largest single operation
of a default cell step on CPU, 3 to 4x faster than oneDNN's: benchmarks/README.md,
bench_depthwise_grad.py), and ELU with its gradient (``elu.cpp``; torch's ELU is about 50x
slower than its Swish on CPU, its ``expm1`` running at scalar speed: :mod:`genzoo.activations`). They are in the core, not
in the NVAE plugin, because several plugins use them and plugins do not import each other.

The kernels are one extension module, built on first use with ``torch.utils.cpp_extension`` (a
C++ compiler and ninja are needed; about 40 seconds, once: torch caches the build under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). It is compiled for the
vector instructions torch itself dispatches to on this machine, so a cache shared between
different machines holds one build per instruction set. The kernels run on torch's own
intra-op threads (``at::parallel_for``): the module links no OpenMP runtime of its own (it is
compiled with ``-fopenmp`` so that ATen's header opens torch's parallel regions, and those calls
bind to the runtime torch is linked with), so one runtime serves the process. If the build fails,
a warning says why, once, and torch's own operators run as before; ``GENZOO_CPU_KERNELS=0``
turns the kernels off. The results are the same up to float rounding
(``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCE = CSRC / "depthwise.cpp"
SOURCES = [SOURCE, CSRC / "elu.cpp", CSRC / "bindings.cpp"]
ENV_SWITCH = "GENZOO_CPU_KERNELS"
_ISA_FLAGS = {  # the instruction set, and the matching ATen vector type (ATen/cpu/vec)
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}  # fmt: skip
_DEFAULT_FLAGS = ["-DCPU_CAPABILITY=DEFAULT"]
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_built: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    """Whether the kernels may be used (``GENZOO_CPU_KERNELS`` is not ``0``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def load() -> ModuleType | None:
    """The compiled extension, built on the first call; None when it is turned off or cannot be
    built (the reason is warned once)."""
    if not enabled():
        return None
    isa = torch.backends.cpu.get_cpu_capability()
    with _lock:
        if isa not in _built:
            _built[isa] = _build(isa)
        return _built[isa]


def _build(isa: str) -> ModuleType | None:
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found": irrelevant here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)

    name = "genzoo_cpu_kernels_" + "".join(ch for ch in isa.lower() if ch.isalnum())
    _log.info("building genzoo's CPU kernels %s (once; cached by torch)", name)
    try:
        # -fopenmp compiles ATen's parallel regions in; no -fopenmp when linking, so the module
        # uses the OpenMP runtime torch is linked with (through libtorch_cpu), not a second one.
        return cpp_extension.load(
            name=name,
            sources=[str(path) for path in SOURCES],
            extra_cflags=["-O3", "-fopenmp", *_ISA_FLAGS.get(isa, _DEFAULT_FLAGS)],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no OpenMP, no ninja, a read-only cache ...
        warnings.warn(
            f"genzoo could not build its CPU kernels ({type(exc).__name__}: {exc}); torch's own "
            f"operators run instead, a little slower. Set {ENV_SWITCH}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def applies(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Whether the kernel computes the weight gradient of ``conv2d(x, weight, ...)``: a
    depthwise convolution (one input and one output channel per group) with a square kernel,
    equal strides and integer paddings, no dilation, on a channels_last CPU float tensor."""
    chs = x.shape[1] if x.dim() == 4 else -1
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and groups == chs
        and tuple(weight.shape[:2]) == (chs, 1)
        and weight.shape[2] == weight.shape[3]
        and tuple(dilation) == (1, 1)
        and stride[0] == stride[1]
        and not isinstance(padding, str)
        and padding[0] == padding[1]
    )


def depthwise_weight_grad(
    x: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int
) -> torch.Tensor | None:
    """The gradient of ``conv2d(x, weight, stride=stride, padding=padding, groups=groups)``
    with respect to ``weight`` given ``grad_output``; None where the kernel does not apply or
    is not available (the caller then asks oneDNN)."""
    if not applies(x, weight, stride, padding, dilation, groups):
        return None
    module = load()
    if module is None:
        return None
    return module.depthwise_weight_grad(x, grad_output, weight.shape[2], stride[0], padding[0])
