"""Device choice, thread counts and mixed precision for the machine at hand."""
from __future__ import annotations

import contextlib
import functools
import os
import platform

import torch

from fercore.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """The device names this machine can run: auto and cpu, then cuda and mps where present."""
    return ["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else []), *(["mps"] if _mps_available() else [])]


def pick_device(name: str = "auto") -> torch.device:
    """auto picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is available")
    if name == "mps" and not _mps_available():
        raise UserError("--device mps asked for, but Apple's MPS is not available")
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What a device is, for model cards: the GPU's name, Apple MPS, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "Apple MPS" if device.type == "mps" else cpu_name()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX): there bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def thread_count(threads: int) -> int:
    """The threads a request for threads runs on: 0 or more than there are means every usable core."""
    # more than the cores would oversubscribe them (and 100,000 crashed torch)
    return min(threads, usable_cores()) if threads > 0 else usable_cores()


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads to thread_count(threads); returns the count set."""
    count = thread_count(threads)
    torch.set_num_threads(count)
    return count


def amp_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype to train and infer with, or None for float32."""
    if mode == "off":
        return None
    if device.type == "cuda":  # never float16: training in it would need loss scaling (a GradScaler)
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and (mode == "on" or cpu_has_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)

