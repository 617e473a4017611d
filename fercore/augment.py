"""Batched augmentation on tensors, on the training device (no torchvision, no per-sample Python)."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fercore.errors import UserError


@dataclass
class AugmentConfig:
    """Each augmentation is switched off by setting its strength to 0."""

    hflip: float = 0.5  # probability
    rotate: float = 15.0  # max degrees either way
    scale: float = 0.15  # max relative zoom either way
    translate: float = 0.1  # max shift as a fraction of the side
    brightness: float = 0.25  # max additive change (images in 0..1)
    contrast: float = 0.3  # max relative change
    erase: float = 0.5  # probability of one random rectangle
    erase_area: tuple[float, float] = (0.02, 0.2)
    mixup: float = 0.0  # Beta(a, a) of the blend with another face of the batch; labels blend alike
    cutmix: float = 0.0  # Beta(a, a) of the share kept when a patch of another face is pasted in; labels alike

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(hflip=0, rotate=0, scale=0, translate=0, brightness=0, contrast=0, erase=0, mixup=0, cutmix=0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> AugmentConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown augmentation(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        area = values.pop("erase_area", cls.erase_area)
        numbers = [*values.values(), *area] if isinstance(area, (list, tuple)) and len(area) == 2 else [None]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise UserError("augmentation strengths must be numbers and erase_area a [low, high] pair")
        return cls(**values, erase_area=tuple(area))


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment float images [B,1,H,W] in 0..1; the result stays in 0..1. gen must live on x's device."""
    n, dev = x.shape[0], x.device
    if cfg.hflip > 0:
        flip = (torch.rand(n, generator=gen, device=dev) < cfg.hflip).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0:
        angle = _uniform(n, -cfg.rotate, cfg.rotate, gen, dev) * (math.pi / 180)
        zoom = torch.exp(_uniform(n, -math.log1p(cfg.scale), math.log1p(cfg.scale), gen, dev))
        shift = _uniform(2 * n, -cfg.translate, cfg.translate, gen, dev).view(n, 2) * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        gain = 1 + _uniform(n, -cfg.contrast, cfg.contrast, gen, dev).view(n, 1, 1, 1)
        offset = _uniform(n, -cfg.brightness, cfg.brightness, gen, dev).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * gain + mean + offset).clamp(0, 1)
    if cfg.erase > 0:
        x = _random_erase(x, cfg, gen)
    return x


def _random_erase(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """With probability cfg.erase, fill one random rectangle per image with uniform noise."""
    n, _, h, w = x.shape
    dev = x.device
    area = _uniform(n, *cfg.erase_area, gen, dev) * h * w
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), gen, dev))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    top = torch.rand(n, generator=gen, device=dev) * (h - eh)
    left = torch.rand(n, generator=gen, device=dev) * (w - ew)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
    chosen = (torch.rand(n, generator=gen, device=dev) < cfg.erase).view(n, 1, 1)
    noise = torch.rand(x.shape, generator=gen, device=dev, dtype=x.dtype)
    return torch.where((inside & chosen).unsqueeze(1), noise, x)


def mix_batch(x: torch.Tensor, cfg: AugmentConfig, rng: random.Random) -> tuple[torch.Tensor, float]:
    """Mixup or CutMix (a batch each, drawn half and half when both are on) of every image [B,1,H,W] with its
    partner in the batch reversed; returns the images and lam, the share of each image's own label in its target
    (its partner's label, y.flip(0), has 1 - lam; lam 1.0: nothing mixed)."""
    kinds = [kind for kind in ("mixup", "cutmix") if getattr(cfg, kind) > 0]
    if not kinds or len(x) < 2:
        return x, 1.0
    kind = rng.choice(kinds)
    alpha = getattr(cfg, kind)
    lam = rng.betavariate(alpha, alpha)
    partner = x.flip(0)
    if kind == "mixup":
        return x * lam + partner * (1 - lam), lam
    h, w = x.shape[-2:]
    cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    top, left = rng.randint(0, h - cut_h), rng.randint(0, w - cut_w)
    out = x.clone()
    out[..., top:top + cut_h, left:left + cut_w] = partner[..., top:top + cut_h, left:left + cut_w]
    return out, 1 - cut_h * cut_w / (h * w)  # the share the pasted patch really left
