"""Reading FER2013 as users have it: Kaggle folders, the Kaggle zip, a bare emotion folder, or fer2013.csv.

Every reader returns a `RawFaces`: all faces decoded to 48x48 uint8, their emotion and split. Nothing is
extracted to disk: zips are read in place, so a hostile archive path can never write anywhere.
"""
from __future__ import annotations

import csv
import functools
import io
import lzma
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from fercore.data.images import FACE_SIZE, ImageError, decode_face
from fercore.errors import UserError
from fercore.labels import EMOTIONS, FER2013_CSV_ORDER, canonical_emotion

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val",
    "test": "test", "testing": "test", "privatetest": "test",
}
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_UNCOMPRESSED = 2 * 1024**3  # 2 GiB: FER2013's zip holds about 60 MB
MAX_ZIP_RATIO = 200  # a member compressing better than this is treated as a bomb
CSV_PIXELS = FACE_SIZE * FACE_SIZE
DECODE_CHUNK = 512


@dataclass
class LoadReport:
    """What a reader skipped or could not place, to show the user."""

    skipped_files: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    unknown_folders: list[str] = field(default_factory=list)
    unsafe_members: list[str] = field(default_factory=list)  # zip members with absolute or ../ paths

    def skip(self, name: str, reason: str) -> None:
        self.skipped_files += 1
        if len(self.skipped_examples) < 5:
            self.skipped_examples.append(f"{name}: {reason}")

    def summary(self) -> str:
        parts = []
        if self.skipped_files:
            parts.append(f"skipped {self.skipped_files} unreadable file(s), e.g. {self.skipped_examples[0]}")
        if self.unsafe_members:
            parts.append(f"ignored {len(self.unsafe_members)} zip member(s) with unsafe paths, e.g. "
                         f"{self.unsafe_members[0]}")
        if self.unknown_folders:
            parts.append("ignored folder(s) that are not emotions: " + ", ".join(sorted(self.unknown_folders)[:8]))
        return "; ".join(parts)


@dataclass
class RawFaces:
    """Decoded faces of one source: images [N,48,48] uint8, emotions (index into EMOTIONS), split names."""

    images: np.ndarray
    emotions: np.ndarray
    splits: np.ndarray  # str array: train / val / test / all
    report: LoadReport


def source_kind(path: Path) -> str:
    """'zip', 'csv' or 'folder'; raises UserError for anything else."""
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix == ".csv":
        return "csv"
    raise UserError(f"unsupported data file {path.name}: give a folder, a .zip or a .csv")


# ---------------------------------------------------------------- image trees (folders and zips)

@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]  # path inside the source, without the file name
    name: str
    read: Callable[[], bytes]


def _place(parts: tuple[str, ...]) -> tuple[str | None, str | None, str | None]:
    """(emotion, split, unknown-folder) for an image's directory parts."""
    if not parts:
        return None, None, None
    emotion = canonical_emotion(parts[-1])
    if emotion is None:
        return None, None, parts[-1]
    split = "all"
    for part in reversed(parts[:-1]):
        named = SPLIT_NAMES.get(part.lower())
        if named:
            split = named
            break
    return emotion, split, None


def _decode_entries(entries: list[_Entry], source_name: str) -> RawFaces:
    report = LoadReport()
    entries = sorted(entries, key=lambda e: (e.parts, e.name))  # one canonical order for folders and zips
    placed: list[tuple[_Entry, str, str]] = []
    unknown: Counter[str] = Counter()
    for entry in entries:
        emotion, split, stray = _place(entry.parts)
        if stray is not None:
            unknown["/".join(entry.parts)] += 1
        elif emotion is not None:
            placed.append((entry, emotion, split))
    report.unknown_folders = list(unknown)
    if not placed:
        found = sorted({e.parts[0] for e in entries if e.parts} | {e.name for e in entries if not e.parts})[:10]
        raise UserError(
            f"no emotion folders in {source_name}: expected train/ and test/ holding "
            f"{', '.join(EMOTIONS)} folders, or those folders directly; found: {', '.join(found) or 'nothing'}"
        )

    def decode(item: tuple[_Entry, str, str]) -> np.ndarray | str:
        """The face, or why it could not be read (told to the report by the calling thread, in file order)."""
        try:
            return decode_face(item[0].read())
        except (ImageError, OSError) as exc:
            return str(exc)

    def decode_chunk(chunk: list[tuple[_Entry, str, str]]) -> list[np.ndarray | str]:
        return [decode(item) for item in chunk]

    # Pillow releases the GIL while decoding; chunks keep the pool's per-task cost off 30,000 tiny images.
    workers = max(1, min(4, (os.cpu_count() or 1)))
    chunks = [placed[i:i + DECODE_CHUNK] for i in range(0, len(placed), DECODE_CHUNK)]
    with ThreadPoolExecutor(workers) as pool:
        faces = [face for chunk in pool.map(decode_chunk, chunks) for face in chunk]
    for (entry, _, _), face in zip(placed, faces):
        if isinstance(face, str):
            report.skip("/".join((*entry.parts, entry.name)), face)
    keep = [i for i, face in enumerate(faces) if not isinstance(face, str)]
    if not keep:
        raise UserError(f"none of the {len(placed)} images in {source_name} could be read "
                        f"({report.skipped_examples[0]})")
    return RawFaces(
        images=np.stack([faces[i] for i in keep]),
        emotions=np.array([EMOTIONS.index(placed[i][1]) for i in keep], dtype=np.int64),
        splits=np.array([placed[i][2] for i in keep]),
        report=report,
    )


def _folder_entries(root: Path) -> Iterator[_Entry]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith("."):
                yield _Entry(rel, name, functools.partial(_read_file, os.path.join(dirpath, name)))


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def read_folder(root: Path) -> RawFaces:
    """A folder with train/ and test/ (each of emotion folders), or emotion folders directly."""
    entries = list(_folder_entries(root))
    own_split = SPLIT_NAMES.get(root.name.lower())
    raw = _decode_entries(entries, root.name)
    if own_split and set(raw.splits.tolist()) == {"all"}:  # pointed at archive/test itself
        raw.splits = np.full(len(raw.splits), own_split)
    return raw


def _zip_entries(archive: zipfile.ZipFile, report_unsafe: list[str]) -> Iterator[_Entry]:
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise UserError(f"zip has {len(infos):,} members, over the limit of {MAX_ZIP_MEMBERS:,}")
    total = sum(i.file_size for i in infos)
    if total > MAX_ZIP_UNCOMPRESSED:
        raise UserError(f"zip would unpack to {total / 1024**3:.1f} GiB, over the limit of "
                        f"{MAX_ZIP_UNCOMPRESSED / 1024**3:.0f} GiB (zip bomb?)")
    for info in infos:
        if info.is_dir():
            continue
        path = _member_path(info)
        if path is None:
            report_unsafe.append(info.filename)
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(".") or "__MACOSX" in path.parts:
            continue
        _refuse_bomb(info)
        yield _Entry(tuple(path.parts[:-1]), path.name, functools.partial(_read_member, archive, info))


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """A member's path inside the zip; None for an unsafe one (absolute, a drive, or climbing out with ..)."""
    path = PurePosixPath(info.filename.replace("\\", "/"))
    return None if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]) else path


def _refuse_bomb(info: zipfile.ZipInfo) -> None:
    """Refuse a member over 1 MB that compresses better than MAX_ZIP_RATIO: real images and tables do not."""
    if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 10**6:
        raise UserError(f"zip member {info.filename} expands {info.file_size // info.compress_size}x (zip bomb?)")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes; an encrypted, unsupported or corrupt member raises OSError (and is skipped)."""
    try:
        return archive.read(info)
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as exc:
        raise OSError(str(exc)) from None


def _zipped_table(archive: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """The csv a zip without images holds: fer2013.csv if there, else its first csv (macOS metadata skipped)."""
    tables = [i for i in archive.infolist() if i.filename.lower().endswith(".csv") and "__MACOSX" not in i.filename
              and _member_path(i) is not None]
    named = [i for i in tables if PurePosixPath(i.filename).name.lower() == "fer2013.csv"]
    return (named or tables or [None])[0]


def read_zip(path: Path) -> RawFaces:
    """The Kaggle archive.zip (or any zip of the folder layouts, or of fer2013.csv), read in place without
    extracting."""
    try:
        with zipfile.ZipFile(path) as archive:
            unsafe: list[str] = []
            entries = list(_zip_entries(archive, unsafe))
            table = None if entries else _zipped_table(archive)
            if table is not None:
                _refuse_bomb(table)
                with archive.open(table) as member:
                    text = io.TextIOWrapper(member, encoding="utf-8-sig", errors="replace", newline="")
                    raw = _read_table(text, f"{path.name}: {table.filename}")
            else:
                raw = _decode_entries(entries, path.name)
    except zipfile.BadZipFile:
        raise UserError(f"{path.name} is not a valid zip file") from None
    except (zlib.error, lzma.LZMAError, EOFError) as exc:  # a damaged member read whole (the zipped csv)
        raise UserError(f"{path.name} is damaged: {exc}") from None
    except (RuntimeError, NotImplementedError) as exc:  # an encrypted csv, or one packed with Deflate64
        raise UserError(f"{path.name}: cannot read its table ({exc}); unzip it and give the csv") from None
    raw.report.unsafe_members += unsafe
    return raw


# ---------------------------------------------------------------- fer2013.csv

def _shown(text: str, limit: int = 60) -> str:
    """text fit for a one-line message: control characters escaped (a binary file's bytes), cut at limit."""
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(lines)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "emotion" not in header or "pixels" not in header:
        found = _shown(", ".join(reader.fieldnames or [])) or "nothing"
        raise UserError(f"CSV header must have 'emotion' and 'pixels' (and optionally 'Usage'); found: {found}")
    reader.fieldnames = header
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:  # a field over the csv module's size limit, a broken quote
        raise UserError(f"CSV line {reader.line_num + 1}: {exc}") from None


def read_csv(path: Path) -> RawFaces:
    """fer2013.csv: emotion (0-6 in FER2013's order), pixels (2304 numbers), optional Usage."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:  # -sig: Excel's BOM
        return _read_table(handle, path.name)


def _read_table(lines: Iterable[str], name: str) -> RawFaces:
    """The faces of a fer2013.csv-style table, read line by line; name is how messages call it."""
    images: list[np.ndarray] = []
    emotions: list[int] = []
    splits: list[str] = []
    errors: list[str] = []
    for line, row in _csv_rows(lines):
        problem = None
        try:
            label = int((row.get("emotion") or "").strip())
            pixels = np.array((row.get("pixels") or "").split(), dtype=np.int64)
        except ValueError:
            problem = "non-numeric emotion or pixels"
        except OverflowError:
            problem = "pixel values outside 0-255"
        else:
            if not 0 <= label < len(FER2013_CSV_ORDER):
                problem = f"emotion {label} out of range 0-6"
            elif pixels.size != CSV_PIXELS:
                problem = f"{pixels.size} pixels, expected {CSV_PIXELS}"
            elif pixels.min() < 0 or pixels.max() > 255:
                problem = "pixel values outside 0-255"
        usage = (row.get("usage") or "").strip()
        if not problem and usage and usage.lower() not in SPLIT_NAMES:
            problem = f"Usage {_shown(usage)!r} is not one of Training, PublicTest, PrivateTest (or train, val, test)"
        if problem:
            errors.append(f"line {line}: {problem}")
            if len(errors) >= 3:
                break
            continue
        images.append(pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE))
        emotions.append(EMOTIONS.index(FER2013_CSV_ORDER[label]))
        splits.append(SPLIT_NAMES[usage.lower()] if usage else "all")
    if errors:
        raise UserError(f"{name}: bad rows: " + "; ".join(errors))
    if not images:
        raise UserError(f"{name} has no data rows")
    return RawFaces(np.stack(images), np.array(emotions, dtype=np.int64), np.array(splits), LoadReport())


READERS: dict[str, Callable[[Path], RawFaces]] = {"folder": read_folder, "zip": read_zip, "csv": read_csv}


def stat_fingerprint(path: Path, folders_only: bool = False) -> str:
    """Path, size and mtime of a file, or of every image in a folder: the decode cache's key material.
    folders_only: those of the folder and every folder in it instead, which change when a file is added, removed
    or renamed but not when one is rewritten in place (for FER2013's 28,709 files: 20 ms against 200 ms)."""
    path = path.resolve()  # one key however the path is spelled (relative, absolute, through ..)
    if path.is_file():
        st = path.stat()
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    lines = io.StringIO()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        names = [""] if folders_only else sorted(n for n in filenames if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        for name in names:  # "": the folder itself
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:  # a broken link, or a file gone since the walk listed it: the readers skip it too
                continue
            lines.write(f"{dirpath}/{name}|{st.st_size}|{st.st_mtime_ns}\n")
    return f"{path}\n{lines.getvalue()}"
