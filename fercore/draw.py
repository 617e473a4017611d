"""Drawing face boxes and labels on images (photos and video frames)."""
from __future__ import annotations

import cv2
import numpy as np

from fercore.labels import COLORS
from fercore.predict import FacePrediction


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def annotate(rgb: np.ndarray, faces: list[FacePrediction], note: str | None = None) -> np.ndarray:
    """A copy of the RGB image with every face boxed and labelled in its emotion's colour."""
    out = np.ascontiguousarray(rgb.copy())
    thickness = max(2, round(max(out.shape[:2]) / 320))
    font_scale = max(0.5, max(out.shape[:2]) / 900)
    for face in faces:
        x, y, w, h = face.box
        color = _rgb(COLORS.get(face.label, "#ffffff"))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        text = f"{face.label} {face.confidence:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - th - base - 4 if y - th - base - 4 >= 0 else y + h
        cv2.rectangle(out, (x, top), (x + tw + 6, top + th + base + 4), color, -1)
        cv2.putText(out, text, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, thickness - 1), cv2.LINE_AA)
    if note:
        cv2.putText(out, note, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2, cv2.LINE_AA)
    return out
