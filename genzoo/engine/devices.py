"""Devices, mixed precision and seeding.

``auto`` picks CUDA when present; every tensor the engine makes is created on the model's or the
input's device (no ``.cuda()``). Mixed precision (Micikevicius et al. 2018) runs on CUDA only:
``fp16`` with a gradient scaler (NVAE's choice, initial scale ``2**10``) or ``bf16`` (no scaler
needed); CPU training is fp32.
"""

from __future__ import annotations

import contextlib
import random
import warnings

import numpy as np
import torch

from genzoo.engine.distributed import DistContext
from genzoo.errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_type(spec: str) -> str:
    """``cuda`` or ``cpu``: the kind of device ``TrainConfig.device`` picks on this machine
    (the process group's backend depends on it, before any device is chosen)."""
    return "cuda" if spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_device(spec: str, ctx: DistContext | None = None) -> torch.device:
    """The device for ``TrainConfig.device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Under DDP, ``auto`` and ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``.
    """
    ctx = ctx or DistContext()
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"TrainConfig.device={spec!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    if spec in ("auto", "cuda"):
        index = ctx.local_rank if ctx.is_distributed else torch.cuda.current_device()
    else:  # cuda:N, the only other form TrainConfig accepts
        index = int(spec.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"TrainConfig.device={spec!r} asks for GPU {index}, but torch sees {torch.cuda.device_count()}"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision actually used: the requested one on CUDA, ``fp32`` on other devices."""
    if device.type != "cuda":
        return "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"TrainConfig.precision='bf16' but {torch.cuda.get_device_name(device)} has no bf16 support"
        )
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` on CUDA; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device, init_scale: float) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (its state is checkpointed either way)."""
    enabled = precision == "fp16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when a scaler is built on a CPU-only machine
        return torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=enabled)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (every device); optionally ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
