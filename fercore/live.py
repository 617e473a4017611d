"""Live video: detect faces every few frames on a smaller copy, follow them in between, smooth their emotions.

Detection is the expensive part of a frame (the CNN on a few 48x48 crops is cheap), so it runs on every
`detect_every`-th frame only, on a copy scaled by `detect_scale`; the frames between reuse the last boxes and
only classify. Each face is a track (matched across detections by overlap) whose label is the mean of its
last `smoothing` probability vectors, so labels do not flicker from frame to frame; that averaging replaces
the 4-view TTA of photos, which would quadruple the classifier's cost on every frame.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from fercore.draw import annotate
from fercore.predict import FacePrediction, Predictor

Box = tuple[int, int, int, int]
T = TypeVar("T")
QUEUE_LIMIT = 3  # frames annotated per call once a video queue has backed up


def frames_to_annotate(queued: Sequence[T], limit: int = QUEUE_LIMIT) -> list[T]:
    """The frames of a video queue worth annotating: all of them while annotation keeps up (so none is shown
    unlabelled or dropped), the newest `limit` once it has fallen behind (older ones would only add lag)."""
    return list(queued[-limit:])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


@dataclass
class FaceTrack:
    """One face followed across frames: its last box and its recent probability vectors."""

    box: Box
    history: deque[np.ndarray] = field(default_factory=deque)


class FpsMeter:
    """Frames per second over the last `window` frames: frames counted over the time they took.

    (Averaging instantaneous rates 1/interval would overstate it whenever intervals vary.)
    """

    def __init__(self, window: int = 30, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.times: deque[float] = deque(maxlen=window)

    @property
    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

    def tick(self) -> float:
        self.times.append(self.clock())
        return self.fps


class LiveAnnotator:
    """Annotates the frames of one video stream, one frame at a time (it remembers faces between frames).

    `detect_every`, `detect_scale` and `smoothing` may be changed between frames.
    """

    def __init__(self, predictor: Predictor, detect_every: int = 3, detect_scale: float = 0.5, smoothing: int = 5,
                 match_iou: float = 0.3):
        if detect_every < 1 or not 0 < detect_scale <= 1 or smoothing < 1:
            raise ValueError("detect_every and smoothing must be at least 1, detect_scale in (0, 1]")
        self.predictor = predictor
        self.detect_every, self.detect_scale, self.smoothing = detect_every, detect_scale, smoothing
        self.match_iou = match_iou
        self.tracks: list[FaceTrack] = []
        self.frames = 0
        self.meter = FpsMeter()

    @property
    def fps(self) -> float:
        return self.meter.fps

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """The RGB uint8 frame with every face boxed and labelled, and the frame rate in a corner."""
        faces = self.faces_in(rgb)
        fps = self.meter.tick()
        return annotate(rgb, faces, note=f"{fps:.0f} fps" if fps else None)

    def faces_in(self, rgb: np.ndarray) -> list[FacePrediction]:
        """The faces of the next RGB uint8 frame of the stream, each with its smoothed emotion."""
        if self.frames % self.detect_every == 0:
            self._follow(self.predictor.predict_array(rgb, detect_scale=self.detect_scale, tta=False))
        elif self.tracks:
            boxes = [t.box for t in self.tracks]  # no TTA: smoothing over frames already averages
            for track, face in zip(self.tracks, self.predictor.predict_boxes(rgb, boxes, tta=False)):
                self._remember(track, face)
        self.frames += 1
        return [self._smoothed(track) for track in self.tracks]

    def _follow(self, faces: list[FacePrediction]) -> None:
        """Match fresh detections to tracks by overlap (best pairs first); unmatched faces start new tracks."""
        pairs = sorted(((iou(t.box, f.box), ti, fi) for ti, t in enumerate(self.tracks) for fi, f in enumerate(faces)),
                       reverse=True)
        taken_tracks: set[int] = set()
        matched: dict[int, FaceTrack] = {}
        for overlap, ti, fi in pairs:
            if overlap < self.match_iou:
                break
            if ti not in taken_tracks and fi not in matched:
                taken_tracks.add(ti)
                matched[fi] = self.tracks[ti]
        self.tracks = []
        for fi, face in enumerate(faces):
            track = matched.get(fi) or FaceTrack(face.box)
            track.box = face.box
            self._remember(track, face)
            self.tracks.append(track)

    def _remember(self, track: FaceTrack, face: FacePrediction) -> None:
        track.history.append(np.array([face.probabilities[c] for c in self.predictor.classes]))
        while len(track.history) > self.smoothing:
            track.history.popleft()

    def _smoothed(self, track: FaceTrack) -> FacePrediction:
        mean = np.mean(track.history, axis=0)
        top = int(mean.argmax())
        classes = self.predictor.classes
        return FacePrediction(track.box, classes[top], float(mean[top]), dict(zip(classes, map(float, mean))))
