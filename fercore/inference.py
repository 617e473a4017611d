"""Turning uint8 faces into model inputs and probabilities: one path for training, evaluation and prediction."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore import hardware
from fercore.data.images import FACE_SIZE

Progress = Callable[[int, int], None]  # (faces done, faces in all)
TTA_ZOOM = 1.1  # the face enlarged by 10% about its centre: inside the training augmentation's zoom range


def to_input(faces: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 or 0..1 float faces [N,H,W] or [N,1,H,W] to normalised float [N,1,H,W] in channels_last."""
    x = faces.float() / 255 if faces.dtype == torch.uint8 else faces.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def tta_views(x: torch.Tensor) -> torch.Tensor:
    """The 4 views test-time augmentation averages, in one batch [4N,...]: the faces, zoomed by TTA_ZOOM,
    and both mirrored. The fer2013 preset's fernet, FER2013 validation, int8: 68.80% alone, 69.19% with the mirror,
    70.37% with all four (the shipped, wider one: 70.30% alone, 71.34% with all four). Two views (the face and its
    mirrored zoom) cost half and scored 0.2 points less on average over four fernet models (0.3-0.5 less on the
    fer2013 preset's), so accuracy kept the four. More views on the same four models
    (each with its mirror): the face and its +-8 degree rotations (6 views) +0.35 points on average, those rotations
    of the face and of the zoom (8) +0.40, these four and those eight (12) +0.47, four 2-pixel shifts (10) -0.55;
    the distilled model gained at most 0.03. Not worth 1.5-3x the cost."""
    theta = torch.tensor([[1 / TTA_ZOOM, 0, 0], [0, 1 / TTA_ZOOM, 0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    zoomed = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    both = torch.cat([x, zoomed])
    return torch.cat([both, both.flip(-1)]).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_proba(model: nn.Module, faces: np.ndarray | torch.Tensor, mean: float, std: float,
                  tta: bool = False, amp: bool = True, on_progress: Progress | None = None) -> torch.Tensor:
    """Class probabilities [N,C] (float32, CPU) for uint8 faces; tta averages over tta_views; on_progress(done,
    total) is told the faces done after each pass.

    The model must already be in eval mode (loaded models are; the trainer switches before validating).
    amp=False for int8 models (no parameters, CPU only). Passes of 64 inputs measured fastest on a CPU.
    """
    weight = next(model.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    dtype = hardware.amp_dtype(device) if amp else None
    batch_size = (64 if device.type == "cpu" else 512) // (4 if tta else 1)  # faces per pass
    faces = torch.as_tensor(faces)
    if len(faces) == 0:  # [0, C]: the classes counted by one pass over a blank face
        blank = to_input(torch.zeros(1, FACE_SIZE, FACE_SIZE, dtype=torch.uint8, device=device), mean, std)
        with hardware.autocast(device, dtype):
            return torch.empty(0, model(blank).shape[1])
    out = []
    for start in range(0, len(faces), batch_size):
        x = to_input(faces[start:start + batch_size].to(device), mean, std)
        with hardware.autocast(device, dtype):
            if tta:  # all views in one batch: one pass, better use of the cores
                probs = model(tta_views(x)).float().softmax(1).view(4, len(x), -1).mean(0)
            else:
                probs = model(x).float().softmax(1)
        out.append(probs.cpu())
        if on_progress:
            on_progress(start + len(x), len(faces))
    return torch.cat(out)
