"""The baseline training epoch, written the way FER seed projects do it (torchvision replaced by the same PIL calls).

An ImageFolder-style dataset decodes one JPEG per item with PIL (convert L, resize 48), flips and rotates each
sample with PIL, makes a float32 tensor like ToTensor; a torch DataLoader batches it; Adam trains fercore's
`basic` architecture in float32 for one epoch on 90% of the images, then the other 10% are validated.

    python benchmarks/seeds_baseline.py --data FOLDER [--workers 0] [--threads 2]

Prints one JSON line: train and val image counts, seconds spent in the training loop, val accuracy.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fercore import models  # noqa: E402  (needs the sys.path line above)

SIZE, BATCH, ROTATE, VAL_FRACTION = 48, 64, 10.0, 0.1
SUFFIXES = {".jpg", ".jpeg", ".png"}


def folder_samples(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) for every image in root/<class>/, classes sorted by name as ImageFolder does."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = [(path, index) for index, name in enumerate(classes)
               for path in sorted((root / name).iterdir()) if path.suffix.lower() in SUFFIXES]
    return samples, classes


class FolderFaces(Dataset):
    """One decode per item, then Grayscale, Resize(48), [RandomHorizontalFlip, RandomRotation], ToTensor."""

    def __init__(self, samples: list[tuple[Path, int]], augment: bool):
        self.samples, self.augment = samples, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        img = Image.open(path).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if self.augment:
            if random.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            img = img.rotate(random.uniform(-ROTATE, ROTATE))  # RandomRotation's defaults: nearest, fill 0
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).unsqueeze(0), label


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> int:
    """One pass over the loader; returns the number of images seen."""
    model.train()
    loss_fn, seen, running = nn.CrossEntropyLoss(), 0, 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()  # the running loss seed projects print: a host sync per step
        seen += len(y)
    return seen


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(1, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder of one subfolder per class")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    samples, classes = folder_samples(args.data)
    order = torch.randperm(len(samples)).tolist()
    cut = int(len(samples) * VAL_FRACTION)
    val = [samples[i] for i in order[:cut]]
    train = [samples[i] for i in order[cut:]]
    train_loader = DataLoader(FolderFaces(train, True), BATCH, shuffle=True, num_workers=args.workers)
    val_loader = DataLoader(FolderFaces(val, False), BATCH, num_workers=args.workers)
    model = models.build("basic", len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    seen = train_epoch(model, train_loader, optimizer)
    loop_seconds = time.perf_counter() - start
    print(json.dumps({"train_images": seen, "val_images": len(val), "loop_seconds": loop_seconds,
                      "val_acc": accuracy(model, val_loader)}))


if __name__ == "__main__":
    main()
