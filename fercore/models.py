"""Architectures built from scratch, chosen by name: a registry in the spirit of timm's create_model."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fercore.quiet import no_warnings


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FeaturesThenClassifier(nn.Module):
    """A network of two parts, set by subclasses: features (convolutions) then classifier (the head)."""

    features: nn.Sequential
    classifier: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicCNN(FeaturesThenClassifier):
    """Seed 001's design: (Conv-BN-ReLU-MaxPool) x4 -> FC 512 -> classes."""

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in widths:
            layers += [*conv_bn_relu(cin, width), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*layers)
        side = 48 // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )


class VGGNet(FeaturesThenClassifier):
    """VGG-style: four double-conv blocks with BN, max-pool and dropout, then two FC layers."""

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0.4):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in widths:
            layers += [conv_bn_relu(cin, width), conv_bn_relu(width, width), nn.MaxPool2d(2), nn.Dropout(dropout / 2)]
            cin = width
        self.features = nn.Sequential(*layers)
        side = 48 // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, 1024), nn.BatchNorm1d(1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(512, num_classes),
        )


class ResidualBlock(nn.Module):
    """Basic residual block (two 3x3 convs, same resolution), a 1x1 projection shortcut when the width changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class FERNet(FeaturesThenClassifier):
    """Our design: VGG-style stages made residual, narrow widths, max-pool between stages, small FC head.

    Residual double-conv blocks train faster and deeper than plain VGG blocks at the same width, so the net
    can stay narrow (32-256 channels), which is what a CPU pays for.
    """

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (1, 1, 2, 1), dropout: float = 0.4):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(1, widths[0])]
        cin = widths[0]
        for width, depth in zip(widths, depths):
            for _ in range(depth):
                layers.append(ResidualBlock(cin, width))
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = 48 // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * side * side, 256), nn.BatchNorm1d(256),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, num_classes),
        )


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    builder: Callable[..., nn.Module]


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("basic", "Seed design: 4x (Conv-BN-ReLU-MaxPool) 32-256 -> FC 512", BasicCNN),
    Architecture("vgg", "VGG-style: 4 double-conv BN blocks 64-512 with dropout -> FC 1024-512", VGGNet),
    Architecture("fernet", "Ours: residual VGG, 5 residual double-conv blocks 32-256, max-pool stages, FC 256", FERNet),
)}


WIDTHS = (1.0, 1.5, 2.0)  # the width factors the Train page offers and `models` counts (the shipped model: 1.5)


def names() -> list[str]:
    return list(ARCHITECTURES)


def build(name: str, num_classes: int = 7, **kwargs: object) -> nn.Module:
    """A freshly initialised model (never pretrained)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name].builder(num_classes=num_classes, **kwargs)


def check_args(name: str, num_classes: int, arch_args: dict[str, object]) -> None:
    """Raise ValueError unless arch_args build a network of name that maps 48x48 faces to num_classes scores
    (built and run on the meta device: shapes only, no memory, milliseconds)."""
    widths = arch_args.get("widths", default_widths(name))
    if not isinstance(widths, (list, tuple)) or not widths or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError("widths must be a list of positive whole numbers")
    try:
        with no_warnings(), torch.device("meta"):
            scores = build(name, num_classes, **arch_args)(torch.zeros(2, 1, 48, 48))
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    if tuple(scores.shape) != (2, num_classes):
        raise ValueError(f"the network gives {tuple(scores.shape)[1:]} scores per face, not {num_classes}")


def default_widths(name: str) -> tuple[int, ...]:
    """The channel widths of an architecture's stages when arch_args gives none."""
    return inspect.signature(ARCHITECTURES[name].builder).parameters["widths"].default


def width_args(name: str, factor: float) -> dict[str, list[int]]:
    """arch_args that scale every stage's width by factor ({} at 1: the architecture's own widths)."""
    if factor == 1:
        return {}
    return {"widths": [round(w * factor) for w in default_widths(name)]}


def width_factor(name: str, arch_args: dict[str, object]) -> float:
    """The factor width_args would have used for arch_args (1 when they set no widths)."""
    widths = arch_args.get("widths")
    return widths[0] / default_widths(name)[0] if isinstance(widths, (list, tuple)) and widths else 1.0


def options_text(arch_args: dict[str, object]) -> str:
    """A model's arch_args in words, 'widths 48-96-192-384' ('' for the architecture's defaults)."""
    def shown(value: object) -> str:
        return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return ", ".join(f"{name} {shown(value)}" for name, value in arch_args.items())


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
