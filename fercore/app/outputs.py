"""What the app hands back: evaluation predictions as CSV, photos and video clips annotated with their faces, PNG
bytes."""
from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from fercore.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from fercore.evaluate import EvalReport
    from fercore.predict import ImagePrediction, Predictor
    from fercore.video import FrameProgress, VideoResult

MAX_IMAGE_UPLOAD_MB = 25
MAX_VIDEO_UPLOAD_MB = 200


def predictions_csv(report: EvalReport) -> str:
    """One row per face: its index in the split, true class, predicted class, whether the model trained on it
    (1/0, empty when not known) and every class's probability."""
    buffer = io.StringIO()
    buffer.write(",".join(["index", "true", "predicted", "trained_on", *report.classes]) + "\n")
    seen = [""] * len(report.labels) if report.seen is None else report.seen.astype(int).tolist()
    rows = zip(report.indices, report.labels, report.predictions, seen, report.probabilities)
    for index, label, predicted, trained_on, probs in rows:
        values = ",".join(f"{p:.5f}" for p in probs)
        buffer.write(f"{index},{report.classes[label]},{report.classes[predicted]},{trained_on},{values}\n")
    return buffer.getvalue()


def faces_csv(predictions: list[ImagePrediction], classes: tuple[str, ...]) -> str:
    """One row per face of every photo: the photo, the face's number and box, its label, confidence and every
    class's probability; a photo with no face found has its whole-image row marked, a bad file one row with its
    error."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # photo names may hold commas or quotes
    writer.writerow(["image", "face", "x", "y", "width", "height", "label", "confidence", "whole_image", "error",
                     *classes])
    for prediction in predictions:
        if prediction.error:
            writer.writerow([prediction.image, *[""] * 8, prediction.error, *[""] * len(classes)])
        for number, face in enumerate(prediction.faces, 1):
            writer.writerow([prediction.image, number, *face.box, face.label, f"{face.confidence:.5f}",
                             int(prediction.no_face_found), "", *(f"{face.probabilities[c]:.5f}" for c in classes)])
    return buffer.getvalue()


DISPLAY_SIDE = 1600  # the longest side of an annotated photo as the page keeps and shows it


@dataclass
class AnnotatedPhoto:
    prediction: ImagePrediction
    image: np.ndarray | None  # the photo (RGB) with every face boxed and labelled, at most DISPLAY_SIDE on its
    # longest side (a 12 MP photo would hold 36 MB in the page's cache); None for a bad file


def annotate_photo(predictor: Predictor, content: bytes, name: str) -> AnnotatedPhoto:
    """Predict the faces of a photo file's bytes (boxes in the photo's own pixels, as Predictor.predict_image gives
    them) and draw them on it; a bad file gives an error, not an exception."""
    from PIL import Image

    from fercore.data.images import as_rgb, downscale, open_photo
    from fercore.predict import ImagePrediction, scaled_boxes

    try:
        opened, reduction = open_photo(content)
        photo = as_rgb(opened)  # decoded once, for the prediction and the drawing
    except UserError as exc:
        return AnnotatedPhoto(ImagePrediction(name, error=str(exc)), None)
    prediction = predictor.predict_photo(photo, name)  # boxes in the decoded pixels
    shown, _ = downscale(Image.fromarray(_drawn(photo, prediction)), DISPLAY_SIDE)
    return AnnotatedPhoto(scaled_boxes(prediction, reduction), np.asarray(shown))


def annotated_png(content: bytes, prediction: ImagePrediction) -> bytes:
    """The photo file's bytes annotated with its prediction, as PNG (the download): at full size, or for a JPEG
    too large to decode whole, at the 1/2-1/8 scale it is decoded at (images.open_photo)."""
    from fercore.data.images import as_rgb, open_photo
    from fercore.predict import scaled_boxes

    opened, reduction = open_photo(content)
    return png_bytes(_drawn(as_rgb(opened), scaled_boxes(prediction, 1 / reduction)))


def _drawn(photo: Image.Image, prediction: ImagePrediction) -> np.ndarray:
    """The RGB photo with the prediction's faces boxed and labelled."""
    from fercore.draw import annotate

    note = "no face found: whole image classified" if prediction.no_face_found else None
    return annotate(np.asarray(photo), prediction.faces, note)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class AnnotatedClip:
    """A video file's faces (fercore.video.VideoResult) and the annotated H.264 MP4's bytes."""

    result: VideoResult
    video: bytes


def annotate_clip(predictor: Predictor, content: IO[bytes], name: str,
                  on_progress: FrameProgress | None = None) -> AnnotatedClip:
    """Annotate a video file (an upload: copied to a temporary folder, which is then removed, as PyAV reads
    files; fercore.video); a bad file gives a UserError."""
    from fercore.video import annotate_video

    with tempfile.TemporaryDirectory(prefix="fercore-video-") as folder:
        source, out = Path(folder) / f"clip{Path(name).suffix.lower()[:8]}", Path(folder) / "annotated.mp4"
        with source.open("wb") as copy:
            shutil.copyfileobj(content, copy)
        result = annotate_video(source, out, predictor, on_progress, name=name)
        return AnnotatedClip(result, out.read_bytes())
