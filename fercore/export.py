"""Export to TorchScript and ONNX: a self-contained model from raw 0..255 faces to probabilities."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from fercore.atomic import atomic_write
from fercore.checkpoint import LoadedModel, checkpoint_file, load_model
from fercore.errors import UserError
from fercore.quiet import no_warnings, quiet_logger

FORMATS = ("torchscript", "onnx")


class Exported(NamedTuple):
    path: Path
    interface: dict[str, Any]  # what the model takes and gives, also stored in it as its "fercore" metadata

    def summary(self) -> str:
        """One line for people: the file, its input and its output."""
        i = self.interface
        return f"{self.path}: input {i['input']}; output {i['output']} in the order {', '.join(i['classes'])}"


class ProbabilityModel(nn.Module):
    """Normalisation, the network and softmax at the checkpoint's one-view temperature (the same as
    fercore.temperature.sharpen) in one module: input float [N,1,48,48] with values 0..255."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.net = loaded.model
        self.register_buffer("mean", torch.tensor(loaded.mean * 255))
        self.register_buffer("std", torch.tensor(loaded.std * 255))
        self.register_buffer("temperature", torch.tensor(loaded.temperature.one_view))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return (self.net((faces - self.mean) / self.std) / self.temperature).softmax(1)


def export(checkpoint: str | Path, fmt: str, out: str | Path) -> Exported:
    """Write the exported model atomically; returns its path and what it takes and gives."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a directory: --out takes the file to write")
    if out.exists() and out.resolve() == checkpoint_file(checkpoint).resolve():
        raise UserError(f"--out {out} is the checkpoint being exported: write the export to another file")
    loaded = load_model(checkpoint, precision="float")
    wrapper = ProbabilityModel(loaded).eval()
    example = torch.rand(2, 1, loaded.size, loaded.size) * 255
    interface = {"classes": list(loaded.classes), "input": "float32 [N,1,48,48] grayscale 0..255 (face crops)",
                 "output": f"probabilities [N,{len(loaded.classes)}]", "arch": loaded.info.get("arch")}
    card = json.dumps(interface)
    if fmt == "torchscript":
        with torch.no_grad():
            scripted = torch.jit.trace(wrapper, example)
        atomic_write(out, lambda handle: torch.jit.save(scripted, handle, _extra_files={"fercore.json": card}))
    else:
        import onnx

        with torch.no_grad(), no_warnings(), quiet_logger("torch.onnx"):  # exporter internals: not ours
            program = torch.onnx.export(wrapper, (example,), None, input_names=["faces"],
                                        output_names=["probabilities"], dynamo=True, verbose=False,
                                        dynamic_shapes={"faces": {0: torch.export.Dim("batch")}})
        model = program.model_proto
        onnx.helper.set_model_props(model, {"fercore": card})
        atomic_write(out, lambda handle: handle.write(model.SerializeToString()))
    return Exported(out, interface)
