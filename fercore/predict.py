"""Prediction: a photo or a video frame -> detected faces -> emotion probabilities, all faces in one batch."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fercore.checkpoint import LoadedModel, load_model
from fercore.data.images import ImageSource, as_rgb, downscale, open_photo, to_face, to_gray
from fercore.data.sources import IMAGE_SUFFIXES
from fercore.errors import UserError
from fercore.faces import FaceDetector, fer_crop_box, load_detector
from fercore.paths import SHIPPED_CHECKPOINT


@dataclass
class FacePrediction:
    """One face: its box (x, y, w, h) in the image's pixels, the top label, every class's probability and the
    48x48 grey face the model read (for explanations; not part of the JSON)."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    probabilities: dict[str, float]
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities}


@dataclass
class ImagePrediction:
    """One image's result: its faces, whether no face was found (whole image classified), or an error."""

    image: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    no_face_found: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "faces": [f.to_json() for f in self.faces], "error": self.error,
                "no_face_found": self.no_face_found}


class Predictor:
    """A loaded model and face detector; build once per process and reuse."""

    def __init__(self, loaded: LoadedModel, detector: FaceDetector | None = None):
        self.loaded = loaded
        self.detector = detector or load_detector()

    @classmethod
    def from_checkpoint(cls, path: str | Path = SHIPPED_CHECKPOINT, precision: str = "auto",
                        device: str = "auto") -> Predictor:
        return cls(load_model(path, device, precision))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loaded.classes

    def classify(self, faces: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """Probabilities [N,C] for uint8 48x48 faces [N,48,48], using the model's own TTA default."""
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self.loaded.proba(faces, tta)

    def _predictions(self, boxes: list[tuple[int, int, int, int]], crops: np.ndarray,
                     probs: np.ndarray) -> list[FacePrediction]:
        out = []
        for box, crop, p in zip(boxes, crops, probs):
            top = int(p.argmax())
            out.append(FacePrediction(tuple(int(v) for v in box), self.classes[top], float(p[top]),
                                      {c: float(v) for c, v in zip(self.classes, p)}, crop))
        return out

    def predict_array(self, rgb: np.ndarray, detect_scale: float = 1.0,
                      tta: bool | None = None) -> list[FacePrediction]:
        """Faces in an RGB uint8 frame. detect_scale < 1 detects on a smaller copy (for live video)."""
        detect_on = rgb
        if detect_scale < 1.0:
            import cv2

            detect_on = cv2.resize(rgb, None, fx=detect_scale, fy=detect_scale, interpolation=cv2.INTER_AREA)
        boxes = []
        for face in self.detector.detect(detect_on):
            x, y, bw, bh = fer_crop_box(face, detect_on.shape[1], detect_on.shape[0])
            s = 1.0 / detect_scale
            boxes.append((round(x * s), round(y * s), max(1, round(bw * s)), max(1, round(bh * s))))
        return self.predict_boxes(rgb, boxes, tta)

    def predict_boxes(self, rgb: np.ndarray, boxes: list[tuple[int, int, int, int]],
                      tta: bool | None = None) -> list[FacePrediction]:
        """Classify the faces at known (x, y, w, h) boxes of a frame without detecting (live video reuses boxes)."""
        crops = np.zeros((len(boxes), 48, 48), np.uint8)
        for i, (x, y, bw, bh) in enumerate(boxes):  # only the crops are converted to gray, not the frame
            crop = rgb[y:y + bh, x:x + bw]
            crops[i] = to_face(to_gray(Image.fromarray(crop)) if crop.ndim == 3 else crop)
        return self._predictions(boxes, crops, self.classify(crops, tta))

    def predict_image(self, source: ImageSource, name: str = "image") -> ImagePrediction:
        """A photo file or bytes: faces with boxes in the photo's own (EXIF-rotated) pixels; errors are caught."""
        try:
            opened, reduction = open_photo(source)
        except UserError as exc:
            return ImagePrediction(name, error=str(exc))
        return scaled_boxes(self.predict_photo(as_rgb(opened), name), reduction)

    def predict_photo(self, photo: Image.Image, name: str = "image") -> ImagePrediction:
        """An opened RGB photo (as_rgb): detection on a copy of at most 1600 pixels a side, boxes in its pixels."""
        work, scale = downscale(photo)
        rgb = np.asarray(work)
        faces = self.predict_array(rgb)
        no_face = not faces
        if no_face:
            faces = self.predict_boxes(rgb, [(0, 0, rgb.shape[1], rgb.shape[0])])
        if scale != 1.0:
            for face in faces:
                x, y, w, h = (round(v / scale) for v in face.box)
                face.box = (x, y, min(w, photo.width - x), min(h, photo.height - y))
        return ImagePrediction(name, faces, None, no_face)


def scaled_boxes(prediction: ImagePrediction, factor: float) -> ImagePrediction:
    """A copy of the prediction with every box scaled by factor: a JPEG decoded at 1/factor of its size
    (images.open_photo's reduction) has its boxes in the photo's own pixels with factor = reduction, and back."""
    if factor == 1:
        return prediction
    faces = [replace(face, box=tuple(round(v * factor) for v in face.box)) for face in prediction.faces]
    return replace(prediction, faces=faces)


def predict_files(predictor: Predictor, paths: list[str | Path]) -> list[ImagePrediction]:
    """Predict each file, and each image directly inside each folder (by name); one bad file gives an error entry,
    the others still get predictions."""
    results = []
    for path in (Path(os.path.expanduser(p)) for p in paths):
        if not path.is_dir():
            results.append(_predict_file(predictor, path))
        elif images := sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            results.extend(_predict_file(predictor, image) for image in images)
        else:
            results.append(ImagePrediction(str(path), error=f"a folder with no images in it "
                                                            f"({', '.join(sorted(IMAGE_SUFFIXES))})"))
    return results


def _predict_file(predictor: Predictor, path: Path) -> ImagePrediction:
    if not path.is_file():
        return ImagePrediction(str(path), error="file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:  # unreadable (permissions, a device gone): this file's error, not the batch's
        return ImagePrediction(str(path), error=f"cannot read: {exc.strerror or exc}")
    return predictor.predict_image(data, str(path))
