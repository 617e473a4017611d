"""Emotion names, synonyms, named class sets and display colours."""
from __future__ import annotations

from collections.abc import Iterable

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# FER2013's CSV numbers the classes in this order.
FER2013_CSV_ORDER: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

_SYNONYMS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "smile": "happy",
    "neutral": "neutral", "calm": "neutral", "contempt_neutral": "neutral",
    "sad": "sad", "sadness": "sad", "unhappy": "sad",
    "surprise": "surprise", "surprised": "surprise", "suprise": "surprise",
}

CLASS_SETS: dict[str, tuple[str, ...]] = {
    "all": EMOTIONS,
    "basic4": ("angry", "happy", "neutral", "sad"),
}

COLORS: dict[str, str] = {
    "angry": "#e5484d",
    "disgust": "#46a758",
    "fear": "#8e4ec6",
    "happy": "#f5a524",
    "neutral": "#8b8d98",
    "sad": "#3e63dd",
    "surprise": "#12a594",
}


def canonical_emotion(name: str) -> str | None:
    """Map a folder or label name such as 'Anger' or 'sadness' to its emotion, or None."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key[:1].isdigit() and "_" in key:  # "3_happy" style folder names
        key = key.split("_", 1)[1]
    return _SYNONYMS.get(key)


def resolve_classes(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """Turn a class-set name or a list of emotion names into an ordered tuple of emotions."""
    if names is None:
        return EMOTIONS
    if isinstance(names, str):
        if names.lower() in CLASS_SETS:
            return CLASS_SETS[names.lower()]
        names = [n for n in names.replace(",", " ").split() if n]
    wanted: list[str] = []
    for name in names:
        if name.lower() in CLASS_SETS:
            wanted.extend(CLASS_SETS[name.lower()])
            continue
        emotion = canonical_emotion(name)
        if emotion is None:
            raise ValueError(f"unknown emotion {name!r}: choose from {', '.join(EMOTIONS)}")
        wanted.append(emotion)
    if len(set(wanted)) < 2:
        raise ValueError("a class set needs at least two different emotions")
    return tuple(e for e in EMOTIONS if e in set(wanted))
