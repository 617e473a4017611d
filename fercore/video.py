"""Video files: every frame's faces boxed and labelled into a new H.264 MP4 (no sound), and a timeline of the
emotions.

Frames go through the webcam's LiveAnnotator: faces detected every few frames (on a copy of at most DETECT_SIDE
pixels) and followed in between, their emotions smoothed over the last frames. Frames are turned upright (phone
clips carry their rotation as metadata) and those larger than MAX_SIDE scaled down first; each keeps its time, so
clips with a variable frame rate keep their timing; a stream that changes its frame size is fitted into the
first frame's size (bars beside or above it; the faces' boxes stay in each frame's own pixels). The timeline has a
row per frame and face.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from fercore.atomic import publish
from fercore.data.images import downscale
from fercore.draw import annotate
from fercore.errors import UserError
from fercore.live import LiveAnnotator
from fercore.predict import FacePrediction, Predictor

MAX_SIDE = 1280  # frames are scaled to at most this long a side (a 4K clip would be slow and heavy)
DETECT_SIDE = 640  # faces are looked for on a copy at most this long a side
MAX_SECONDS = 600  # longer clips are refused: minutes of work on a CPU
VIDEO_TYPES = ("mp4", "mov", "m4v", "webm", "mkv", "avi")
TICK = Fraction(1, 90000)  # the output's time base (MPEG's usual clock)
MIN_SIDE = 16  # frames narrower than this are refused (H.264 needs even sides; no face fits anyway)
FrameProgress = Callable[[int, int], None]  # frames done, frames in all (from the length if not given; 0: unknown)


@dataclass
class VideoResult:
    """What annotate_video read: each frame's time and faces, the frame size written, and the smoothing used."""

    times: list[float]  # seconds from the first frame, per frame
    faces: list[list[FacePrediction]]  # per frame
    width: int
    height: int
    smoothing: int  # frames each face's emotion is averaged over
    break_note: str = ""  # how the file broke off or ended early ('' when it played to its end)

    @property
    def frames(self) -> int:
        return len(self.faces)

    @property
    def seconds(self) -> float:
        """From the first frame to the last, plus one frame's worth."""
        if len(self.times) < 2:
            return 0.0
        return (self.times[-1] - self.times[0]) * len(self.times) / (len(self.times) - 1)

    @property
    def fps(self) -> float:
        """Frames per second on average."""
        return self.frames / self.seconds if self.seconds else 0.0

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
        short = f"; {self.break_note}" if self.break_note else ""
        return (f"{self.frames:,} frames, {self.seconds:.1f} s at {self.fps:.3g} frames/s, {self.width}x{self.height}; "
                f"faces in {found:,} of them; the largest face: {shown}{short}")

    def timeline_csv(self, classes: tuple[str, ...]) -> str:
        """One row per frame and face: time, face, box, label, confidence and every class's probability; a frame
        without faces has one row with the face columns empty."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["frame", "seconds", "face", "x", "y", "w", "h", "label", "confidence", *classes])
        for frame, (time, faces) in enumerate(zip(self.times, self.faces)):
            if not faces:
                writer.writerow([frame, f"{time:.3f}", *[""] * (7 + len(classes))])
            for number, face in enumerate(faces, 1):
                writer.writerow([frame, f"{time:.3f}", number, *face.box, face.label, f"{face.confidence:.4f}",
                                 *(f"{face.probabilities[c]:.4f}" for c in classes)])
        return out.getvalue()


def annotate_video(source: Path, out: Path, predictor: Predictor, on_progress: FrameProgress | None = None,
                   detect_every: int = 3, name: str | None = None) -> VideoResult:
    """Write source's frames with every face boxed and labelled to out (H.264 MP4, whatever its suffix; written
    whole or not at all). A file that is not a readable video, is too small, lasts over MAX_SECONDS, or cannot be
    written gives a UserError naming it name (default: its file name); a file that breaks off is labelled as far
    as it goes (VideoResult.break_note says so)."""
    name = name or source.name
    try:
        container = av.open(str(source), metadata_errors="replace")
    except av.error.FFmpegError:
        raise UserError(f"{name} is not a video this app can read") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{name} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else (
            container.duration / av.time_base if container.duration else 0.0)
        if duration > MAX_SECONDS:
            raise UserError(f"{name} lasts {_length(duration)}, over the limit of {_length(MAX_SECONDS)}")
        total = stream.frames or round(duration * rate)  # 0: unknown
        annotator = LiveAnnotator(predictor, detect_every=detect_every)
        times: list[float] = []
        faces: list[list[FacePrediction]] = []
        frames = _Frames(container, stream, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.mp4", dir=out.parent)
        os.close(handle)  # PyAV opens it by name: the MP4 index goes to the front (faststart), which needs a path
        try:
            with av.open(partial, "w", format="mp4", options={"movflags": "+faststart"}) as output:
                encoder, start, pts = None, 0.0, -1
                for frame in frames:
                    time = float(frame.time) if frame.time is not None else len(times) / float(rate)
                    start = time if not times else start
                    if time - start > MAX_SECONDS:  # a file that did not say how long it is
                        raise UserError(f"{name} lasts over the limit of {_length(MAX_SECONDS)}")
                    rgb = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                    rgb = np.asarray(downscale(Image.fromarray(rgb), MAX_SIDE)[0])
                    if encoder is None:
                        if min(rgb.shape[:2]) < MIN_SIDE:
                            raise UserError(f"{name} is {rgb.shape[1]}x{rgb.shape[0]}: too small to hold a face")
                        encoder = h264_stream(output, rate, rgb.shape[1], rgb.shape[0])
                        annotator.detect_scale = min(1.0, DETECT_SIDE / max(rgb.shape[:2]))
                    found = annotator.faces_in(rgb)
                    drawn = av.VideoFrame.from_ndarray(_fitted(annotate(rgb, found), encoder.width, encoder.height),
                                                       format="rgb24")
                    pts = max(round((time - start) / TICK), pts + 1)  # rising, as encoders need
                    drawn.pts, drawn.time_base = pts, TICK
                    output.mux(encoder.encode(drawn))
                    times.append(time - start)
                    faces.append(found)
                    if on_progress:
                        on_progress(len(faces), max(total, len(faces)) if total else 0)
                if encoder is None:
                    raise UserError(f"{name} has no frames")
                output.mux(encoder.encode(None))
                width, height = encoder.width, encoder.height
            publish(Path(partial), out)
        except av.error.FFmpegError as exc:  # decoding errors are told apart (_Frames): this is the writing
            raise UserError(f"cannot write the labelled video to {out} ({exc.strerror})") from None
        finally:
            Path(partial).unlink(missing_ok=True)
    return VideoResult(times, faces, width, height, annotator.smoothing, frames.broke or _ends_early(times, duration))


def h264_stream(output: av.container.OutputContainer, rate: Fraction, width: int, height: int) -> av.VideoStream:
    """An H.264 stream browsers play: yuv420p, even sides (odd ones are cropped by a pixel), a fast preset."""
    encoder = output.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
    encoder.width, encoder.height = width // 2 * 2, height // 2 * 2
    encoder.pix_fmt = "yuv420p"
    encoder.options = {"preset": "veryfast", "crf": "23"}
    encoder.codec_context.time_base = TICK  # each frame keeps its own time (variable frame rates stay right)
    return encoder


class _Frames:
    """The stream's frames. A decoding error before the first is a UserError ('not a video'); after it, the frames
    end there and broke says so (errors of writing the output are not caught here)."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, name: str):
        self.decoded, self.name = container.decode(stream), name
        self.count, self.broke = 0, ""

    def __iter__(self) -> Iterator[av.VideoFrame]:
        while True:
            try:
                frame = next(self.decoded)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                if not self.count:
                    raise UserError(f"{self.name} is not a video this app can read") from None
                self.broke = (f"the file breaks off after {self.count:,} frame{'s' * (self.count != 1)} "
                              f"({exc.strerror}): labelled as far as it goes")
                return
            self.count += 1
            yield frame


def _ends_early(times: list[float], duration: float) -> str:
    """A note when the frames stop well before the length the file gives (a file cut short), else ''."""
    shown = times[-1] if times else 0.0
    if duration and shown < duration - max(1.0, 0.1 * duration):
        return f"its frames stop at {shown:.1f} s of the {duration:.1f} s it announces: it may be cut short"
    return ""


def _length(seconds: float) -> str:
    """A clip's length as people say it: 45.0 s, 10 min 01 s."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as it is meant to be seen: rotation (PyAV's, counterclockwise degrees) applied."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _fitted(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame at the output's size: cropped to even sides (H.264 in yuv420p needs them), or, where the stream
    changed its frame size since the first frame, scaled to fit and centred on black (not stretched)."""
    if (rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2) == (height, width):
        return rgb[:height, :width]
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    inner_w = min(width, max(1, round(rgb.shape[1] * scale)))
    inner_h = min(height, max(1, round(rgb.shape[0] * scale)))
    fitted = np.zeros((height, width, 3), np.uint8)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    scaled = Image.fromarray(rgb).resize((inner_w, inner_h), Image.Resampling.BILINEAR)
    fitted[top:top + inner_h, left:left + inner_w] = scaled
    return fitted
