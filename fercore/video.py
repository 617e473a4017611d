"""Video files: every frame's faces boxed and labelled into a new H.264 MP4, and a timeline of the emotions.

Frames go through the webcam's LiveAnnotator (detection every few frames, faces followed in between, emotions
smoothed over the last frames), so a clip reads as the live webcam would have read it. Frames larger than
MAX_SIDE are scaled down first. The timeline has a row per frame and face.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from fercore.draw import annotate
from fercore.errors import UserError
from fercore.live import LiveAnnotator
from fercore.predict import FacePrediction, Predictor

MAX_SIDE = 1280  # frames are scaled to at most this long a side (a 4K clip would be slow and heavy)
DETECT_SIDE = 640  # faces are looked for on a copy at most this long a side (as on the webcam)
MAX_SECONDS = 600  # longer clips are refused: minutes of work on a CPU
VIDEO_TYPES = ("mp4", "mov", "m4v", "webm", "mkv", "avi")
FrameProgress = Callable[[int, int], None]  # frames done, frames in all (0 when the file does not say)


@dataclass
class VideoResult:
    """What annotate_video read: the frames, their rate, and each frame's faces."""

    frames: int
    fps: float
    width: int
    height: int
    faces: list[list[FacePrediction]]  # per frame

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def main_faces(self) -> list[FacePrediction | None]:
        """Per frame, its largest face (None in a frame without faces)."""
        return [max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None for faces in self.faces]

    def main_face_shares(self, classes: tuple[str, ...]) -> dict[str, float]:
        """The share of the frames with a face in which the largest face showed each emotion."""
        labels = [face.label for face in self.main_faces if face is not None]
        return {c: labels.count(c) / len(labels) if labels else 0.0 for c in classes}

    def main_face_probabilities(self, classes: tuple[str, ...]) -> np.ndarray:
        """[frames, classes]: the largest face's probabilities per frame, NaN in frames without faces."""
        return np.array([[face.probabilities[c] for c in classes] if face else [np.nan] * len(classes)
                         for face in self.main_faces]).reshape(len(self.faces), len(classes))

    def summary(self, classes: tuple[str, ...]) -> str:
        """One line: frames, length, size, how often a face was found and what the largest one showed most."""
        found = sum(1 for faces in self.faces if faces)
        shares = sorted(self.main_face_shares(classes).items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{c} {share:.0%}" for c, share in shares if share >= 0.005) or "no face"
        return (f"{self.frames:,} frames, {self.seconds:.1f} s at {self.fps:.3g} frames/s, {self.width}x{self.height}; "
                f"faces in {found:,} of them; the largest face: {shown}")

    def timeline_csv(self, classes: tuple[str, ...]) -> str:
        """One row per frame and face: time, face, box, label, confidence and every class's probability; a frame
        without faces has one row with the face columns empty."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["frame", "seconds", "face", "x", "y", "w", "h", "label", "confidence", *classes])
        for frame, faces in enumerate(self.faces):
            seconds = f"{frame / self.fps:.3f}" if self.fps else ""
            if not faces:
                writer.writerow([frame, seconds, *[""] * (7 + len(classes))])
            for number, face in enumerate(faces, 1):
                writer.writerow([frame, seconds, number, *face.box, face.label, f"{face.confidence:.4f}",
                                 *(f"{face.probabilities[c]:.4f}" for c in classes)])
        return out.getvalue()


def annotate_video(source: Path, out: Path, predictor: Predictor, on_progress: FrameProgress | None = None,
                   detect_every: int = 3, name: str | None = None) -> VideoResult:
    """Write source's frames with every face boxed and labelled to out (H.264 MP4, written whole or not at all);
    a file that is not a readable video, or one over MAX_SECONDS, gives a UserError (naming it name, if given)."""
    name = name or source.name
    try:
        container = av.open(str(source))
    except av.error.FFmpegError:
        raise UserError(f"{name} is not a video this app can read") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{name} has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / av.time_base if container.duration else 0.0)
        if duration > MAX_SECONDS:
            raise UserError(f"{name} lasts {_length(duration)}, over the limit of {_length(MAX_SECONDS)}")
        total = stream.frames or round(duration * fps)
        annotator = LiveAnnotator(predictor, detect_every=detect_every)
        faces: list[list[FacePrediction]] = []

        partial = out.with_name(f".{out.name}.partial.mp4")  # moved over out once whole (faststart needs a path)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as output:
                encoder = None
                try:
                    for frame in container.decode(stream):
                        rgb = _scaled(frame.to_ndarray(format="rgb24"))
                        if encoder is None:
                            encoder = _encoder(output, fps, rgb.shape[1], rgb.shape[0])
                            annotator.detect_scale = min(1.0, DETECT_SIDE / max(rgb.shape[:2]))
                        found = annotator.faces_in(rgb)
                        faces.append(found)
                        drawn = av.VideoFrame.from_ndarray(_even(annotate(rgb, found)), format="rgb24")
                        output.mux(encoder.encode(drawn))
                        if on_progress:
                            on_progress(len(faces), max(total, len(faces)))
                except av.error.FFmpegError as exc:
                    if not faces:
                        raise UserError(f"{name} is not a video this app can read") from None
                    raise UserError(f"{name} is cut short after {len(faces)} frames ({exc.strerror})") from None
                if encoder is None:
                    raise UserError(f"{name} has no frames")
                output.mux(encoder.encode(None))
                width, height = encoder.width, encoder.height
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
    return VideoResult(len(faces), fps, width, height, faces)


def _length(seconds: float) -> str:
    """A clip's length as people say it: 12 min, or 45.0 s under a minute."""
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _scaled(rgb: np.ndarray) -> np.ndarray:
    """The frame with its longest side at most MAX_SIDE."""
    height, width = rgb.shape[:2]
    if max(height, width) <= MAX_SIDE:
        return rgb
    factor = MAX_SIDE / max(height, width)
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def _even(rgb: np.ndarray) -> np.ndarray:
    """The frame cropped to even sides (H.264 in yuv420p needs them)."""
    return rgb[:rgb.shape[0] // 2 * 2, :rgb.shape[1] // 2 * 2]


def _encoder(output: av.container.OutputContainer, fps: float, width: int, height: int) -> av.VideoStream:
    """An H.264 stream browsers play: yuv420p, even sides, a fast preset."""
    encoder = output.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    encoder.width, encoder.height = width // 2 * 2, height // 2 * 2
    encoder.pix_fmt = "yuv420p"
    encoder.options = {"preset": "veryfast", "crf": "23"}
    return encoder
