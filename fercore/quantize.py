"""int8 inference on CPUs: static post-training quantisation with calibration stored in the checkpoint.

The float model is quantised with PyTorch's FX graph mode on the oneDNN engine: per-channel symmetric int8
weights, full-range 8-bit activations where the CPU has AVX-512 VNNI (7-bit elsewhere, which avoids overflow
without VNNI but cost 0.3 points of FER2013 validation accuracy here).
Calibration runs once, after training, on training faces; what it learned (the observers' histograms and
ranges, plain tensors) is stored in the checkpoint, so loading needs no data and stays weights_only.
"""
from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fercore.inference import to_input
from fercore.quiet import warning_filters

ENGINE = "onednn"
CALIBRATION_FACES = 256  # 2,048 gave the same validation accuracy on FER2013
_OBSERVER = "activation_post_process"
_ENGINE_LOCK = threading.Lock()  # the engine is process-wide; app sessions may load models at the same time


def available() -> bool:
    """Whether this PyTorch build has the int8 engine (x86 builds do; Apple and most ARM builds do not)."""
    return ENGINE in torch.backends.quantized.supported_engines


@contextmanager
def _quiet_fx() -> Iterator[None]:
    """The oneDNN engine while building, without FX's deprecation notices (it points to torchao; the API is stable
    in the pinned torch; other warnings still show) and without FX's per-node stack traces (1.3 s of a 1.8 s
    conversion, for nothing we use)."""
    import torch.fx.config as fx_config

    with _ENGINE_LOCK, warning_filters():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*(torchao|deprecat|_empty_affine_quantized)")
        previous = torch.backends.quantized.engine, fx_config.do_not_emit_stack_traces
        torch.backends.quantized.engine, fx_config.do_not_emit_stack_traces = ENGINE, True
        try:
            yield
        finally:
            torch.backends.quantized.engine, fx_config.do_not_emit_stack_traces = previous


def _prepared(model: nn.Module) -> nn.Module:
    """A CPU float copy of model with observers after every quantised op."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import prepare_fx

    qconfig = QConfig(activation=HistogramObserver.with_args(reduce_range=not torch.cpu._is_vnni_supported()),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                qscheme=torch.per_channel_symmetric))
    float_model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    return prepare_fx(float_model, get_default_qconfig_mapping(ENGINE).set_global(qconfig),
                      (torch.zeros(2, 1, 48, 48),))


@torch.no_grad()  # not inference_mode: its tensors could not be loaded into observers later
def calibrate(model: nn.Module, faces: np.ndarray, mean: float, std: float, seed: int = 0,
              count: int = CALIBRATION_FACES) -> dict[str, torch.Tensor]:
    """Observer state from running up to `count` of the uint8 faces [N,48,48] (a seeded sample) through model."""
    if len(faces) == 0:
        raise ValueError("int8 calibration needs at least one face")
    pick = np.random.default_rng(seed).permutation(len(faces))[:count]
    with _quiet_fx():
        prepared = _prepared(model)
        for start in range(0, len(pick), 128):
            batch = torch.from_numpy(np.ascontiguousarray(faces[np.sort(pick[start:start + 128])]))
            prepared(to_input(batch, mean, std).contiguous())
    return {k: v.clone() for k, v in prepared.state_dict().items() if _OBSERVER in k}


def to_int8(model: nn.Module, calibration: dict[str, torch.Tensor]) -> nn.Module:
    """The int8 CPU version of model, from calibrate()'s result; ValueError if they do not belong together."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_fx():
        prepared = _prepared(model)
        expected = {k for k in prepared.state_dict() if _OBSERVER in k}
        if set(calibration) != expected:
            raise ValueError("the int8 calibration does not match the model's layers")
        prepared.load_state_dict(calibration, strict=False)
        return convert_fx(prepared).eval()
