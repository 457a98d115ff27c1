"""genzoo's compiled CPU kernels (``genzoo/layers/csrc/``): the weight gradient of a depthwise
convolution (NVAE's decoder cell's) on channels_last tensors (``depthwise.cpp``; the largest single operation
of a default cell step on CPU, 3 to 4x faster than oneDNN's: benchmarks/README.md,
benchmarks/cells/bench_depthwise_grad.py), and ELU with its gradient (``elu.cpp``; torch's ELU is about 50x
slower than its Swish on CPU, its ``expm1`` running at scalar speed: :mod:`genzoo.layers.activations`). They are in the core, not
in the NVAE plugin, because several plugins use them and plugins do not import each other.

The kernels are one extension module, built on first use with ``torch.utils.cpp_extension`` (a
C++ compiler and ninja are needed; about 40 seconds, once per environment). The build goes under
the root torch builds extensions in (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions/<python>_<cuda>``), into a folder named by a hash of everything that
changes the build (:func:`build_key`: the interpreter and its environment, torch's version and C++
ABI, the compiler and its flags, the vector instruction set, the sources), so that environments
sharing a cache each build once and keep their build, instead of rebuilding one folder in turn
(issue 23). A process builds or loads only while it holds an ``fcntl.flock`` on the folder's
``genzoo.lock``: a second process waits for the first's build and then loads it without building,
no process loads a library another is still writing, and a builder that is killed leaves no stale
lock, since the kernel releases a flock when its holder dies (without ``fcntl``, torch's own lock
is all there is). It is compiled for the vector instructions torch itself dispatches to on this
machine, so a cache shared between different machines holds one build per instruction set. The
kernels run on torch's own intra-op threads (``at::parallel_for``): the module links no OpenMP
runtime of its own (it is compiled with ``-fopenmp`` so that ATen's header opens torch's parallel
regions, and those calls bind to the runtime torch is linked with), so one runtime serves the
process. If the build fails, a warning says why, once, and torch's own operators run as before;
``GENZOO_CPU_KERNELS=0`` turns the kernels off. The results are the same up to float rounding
(``tests/test_fast_paths.py``; the build's folder and lock: ``tests/test_cpu_kernel_build.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

try:
    import fcntl
except ImportError:  # not a POSIX system: torch's own lock only
    fcntl = None

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCE = CSRC / "depthwise.cpp"
SOURCES = [SOURCE, CSRC / "elu.cpp", CSRC / "bindings.cpp"]
ENV_SWITCH = "GENZOO_CPU_KERNELS"
LOCK_FILE = "genzoo.lock"
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


def build_key(isa: str) -> dict[str, str]:
    """Everything that changes the build for the instruction set ``isa`` (one of
    ``torch.backends.cpu.get_cpu_capability()``'s answers): two environments with the same key may
    share a build, two with different keys must not."""
    return {
        "python": f"{sys.implementation.cache_tag} {getattr(sys, 'abiflags', '')} {sys.version}",
        "environment": os.path.realpath(sys.prefix),
        "torch": f"{torch.__version__} {torch.version.git_version} {Path(torch.__file__).parent}",
        "cxx11_abi": str(torch._C._GLIBCXX_USE_CXX11_ABI),
        "compiler": os.environ.get("CXX", "c++"),  # the one torch's cpp_extension runs
        "isa": isa,
        "flags": " ".join(_flags(isa)),
        "sources": _sources_digest(),
    }


def module_name(isa: str) -> str:
    """The extension's module name, which is also its build folder's: the kernels' name, the
    instruction set and a hash of :func:`build_key` (a valid Python identifier)."""
    digest = hashlib.sha256(json.dumps(build_key(isa), sort_keys=True).encode()).hexdigest()[:16]
    return f"genzoo_cpu_kernels_{''.join(ch for ch in isa.lower() if ch.isalnum())}_{digest}"


def build_directory(isa: str | None = None) -> Path:
    """The folder this environment builds the kernels in and loads them from (created if
    missing): :func:`module_name` under the root torch builds its extensions in."""
    isa = isa or torch.backends.cpu.get_cpu_capability()
    return Path(_cpp_extension()._get_build_directory(module_name(isa), verbose=False))


def _flags(isa: str) -> list[str]:
    # -fopenmp compiles ATen's parallel regions in; no -fopenmp when linking, so the module
    # uses the OpenMP runtime torch is linked with (through libtorch_cpu), not a second one.
    return ["-O3", "-fopenmp", *_ISA_FLAGS.get(isa, _DEFAULT_FLAGS)]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):
        if path.suffix in (".cpp", ".h"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cpp_extension() -> ModuleType:
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found": irrelevant here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Held while building in or loading from ``folder``. A flock, not a file whose existence
    locks: the kernel drops it when its holder dies, however it dies."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            _log.info("waiting for %s, which is building genzoo's CPU kernels in %s", holder, folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        # torch's own lock file (older torch's FileBaton, which locks by existing) is stale once
        # genzoo's is held: only genzoo builds in this folder.
        (folder / "lock").unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the flock


def _build(isa: str) -> ModuleType | None:
    try:
        cpp_extension = _cpp_extension()
        name = module_name(isa)
        folder = build_directory(isa)
        with _build_lock(folder):
            if not (folder / f"{name}{getattr(cpp_extension, 'LIB_EXT', '.so')}").exists():
                _log.info("building genzoo's CPU kernels in %s (once for this environment)", folder)
            # Loaded under the lock, so never half-written: any other builder has finished.
            return cpp_extension.load(
                name=name,
                sources=[str(path) for path in SOURCES],
                extra_cflags=_flags(isa),
                build_directory=str(folder),
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
