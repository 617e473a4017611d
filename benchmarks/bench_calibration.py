"""How far a checkpoint's confidence can be trusted on its own validation faces: calibration of its network's
probabilities, of those scaled by its temperature for those views, and cross-fitted (each half scaled by the
temperature fitted on the other half), with and without test-time augmentation. Nothing is written.

    python benchmarks/bench_calibration.py [--checkpoint checkpoints/fer2013.pt] --data FER2013_TRAIN [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fercore.checkpoint import TEMPERATURE, model_from_checkpoint, read_checkpoint, temperatures_of  # noqa: E402
from fercore.data import load_data  # noqa: E402
from fercore.evaluate import own_split  # noqa: E402
from fercore.metrics import calibration  # noqa: E402
from fercore.temperature import cross_fitted, fit_temperature, log_loss, sharpen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "fer2013.pt"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = read_checkpoint(args.checkpoint)
    shipped = temperatures_of(raw, Path(args.checkpoint).name)
    network = model_from_checkpoint({**raw, TEMPERATURE: 1.0}, Path(args.checkpoint).name)
    faces = own_split(raw, load_data(args.data), "val")
    print(f"{args.checkpoint}: {len(faces.labels):,} validation faces, {network.dtype}, its temperatures "
          f"{shipped.tta:g} (TTA) and {shipped.one_view:g} (one view)")
    print("| views | probabilities | temperature | mean confidence | accuracy | ECE (points) | log-loss |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for tta in (True, False):
        probs = network.proba(faces.images, tta)
        shipped_t = shipped.for_views(tta)
        fitted = fit_temperature(probs, faces.labels)
        variants = {"the network's": (1.0, probs),
                    "scaled, as the checkpoint says": (shipped_t, sharpen(probs, shipped_t)),
                    "scaled, fitted on these faces": (fitted, sharpen(probs, fitted)),
                    "scaled, 2-fold cross-fitted": (None, cross_fitted(probs, faces.labels))}
        for name, (temperature, scaled) in variants.items():
            fit = calibration(scaled, faces.labels)
            shown = "per half" if temperature is None else f"{temperature:g}"
            print(f"| {'TTA' if tta else 'one'} | {name} | {shown} | {fit.mean_confidence:.1%} | "
                  f"{fit.overall_accuracy:.1%} | {100 * fit.error:.1f} | {log_loss(scaled, faces.labels):.3f} |")


if __name__ == "__main__":
    main()
