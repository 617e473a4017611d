"""Every data source layout, its error messages, and the decode cache."""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg_bytes, write_image_tree

from fercore.data import dataset as dataset_module
from fercore.data import load_data
from fercore.data.sources import READERS, stat_fingerprint
from fercore.errors import UserError
from fercore.labels import EMOTIONS, FER2013_CSV_ORDER


def test_kaggle_folder_has_train_and_test(image_tree: Path) -> None:
    data = load_data(image_tree)
    assert data.splits_present() == ["test", "train"]
    assert data.raw.images.shape[1:] == (48, 48) and data.raw.images.dtype == np.uint8
    test = data.split("test")
    assert set(test.counts()) == set(EMOTIONS) and all(n > 0 for n in test.counts().values())


def test_bare_folder_is_one_split_and_val_is_carved(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "faces", per_class=10, splits=())
    data = load_data(root)
    assert data.splits_present() == ["all"]
    train, val = data.split("train"), data.split("val")
    assert len(train) + len(val) == len(data.split("all"))
    assert all(n == 1 for n in val.counts().values())  # 10% of 10 per class, stratified


def test_pointing_at_the_test_folder_itself_gives_test_split(image_tree: Path) -> None:
    data = load_data(image_tree / "test")
    assert data.splits_present() == ["test"]
    assert len(data.split("test")) == len(load_data(image_tree).split("test"))


def test_synonym_and_case_folder_names(tmp_path: Path) -> None:
    names = {"angry": "Anger", "sad": "SADNESS", "happy": "Happiness", "surprise": "surprised"}
    data = load_data(write_image_tree(tmp_path / "a", folder_names=names))
    assert set(data.split("train").counts()) == set(EMOTIONS)


def test_class_subset_relabels_with_names(image_tree: Path) -> None:
    subset = ("angry", "happy", "neutral", "sad")
    faces = load_data(image_tree).split("train", subset)
    assert faces.classes == subset and set(faces.labels.tolist()) == {0, 1, 2, 3}


def test_misnamed_class_folder_is_named_in_the_error(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "a", folder_names={"happy": "hapy"})
    with pytest.raises(UserError, match=r"no happy images.*hapy"):
        load_data(root).split("train")


def test_wrong_layout_says_what_was_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpeg_bytes(np.zeros((48, 48), np.uint8)))
    with pytest.raises(UserError, match=r"expected train/ and test/.*found: a.jpg"):
        load_data(tmp_path / "photos")


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no emotion folders"):
        load_data(tmp_path / "empty")


def test_unreadable_files_are_skipped_and_counted(image_tree: Path) -> None:
    (image_tree / "train" / "happy" / "broken.jpg").write_bytes(b"this is text")
    (image_tree / "train" / "sad" / "empty.png").write_bytes(b"")
    (image_tree / "train" / "fear" / "gone.jpg").symlink_to(image_tree / "moved-away.jpg")  # a broken link
    stamp = stat_fingerprint(image_tree)  # the app's cache key: the broken link leaves it out, as the reader does
    assert "broken.jpg" in stamp and "gone.jpg" not in stamp
    data = load_data(image_tree)
    assert data.raw.report.skipped_files == 3
    assert any(name in data.raw.report.summary() for name in ("broken.jpg", "empty.png", "gone.jpg"))


def test_skips_from_every_decoding_thread_are_counted_in_file_order(image_tree: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fercore.data import sources

    monkeypatch.setattr(sources, "DECODE_CHUNK", 2)  # many chunks, decoded by several threads at once
    for i in range(40):
        (image_tree / "train" / "sad" / f"zz-broken-{i:02d}.jpg").write_bytes(b"this is text")
    report = load_data(image_tree).raw.report
    assert report.skipped_files == 40
    assert [e.split(":")[0] for e in report.skipped_examples] == [f"train/sad/zz-broken-{i:02d}.jpg" for i in range(5)]


def test_a_folders_only_stamp_sees_files_added_removed_or_renamed(image_tree: Path) -> None:
    happy = image_tree / "train" / "happy"
    first = sorted(happy.iterdir())[0]
    stamps = [stat_fingerprint(image_tree, folders_only=True)]
    first.write_bytes(first.read_bytes())  # rewritten in place: only the files' stamp sees it
    stamps.append(stat_fingerprint(image_tree, folders_only=True))
    for change in (lambda: (happy / "new.jpg").write_bytes(first.read_bytes()), lambda: (happy / "new.jpg").unlink(),
                   lambda: first.rename(happy / "renamed.jpg")):
        time.sleep(0.05)  # a folder's time moves on with each change (coarse clocks tick every 4-10 ms)
        change()
        stamps.append(stat_fingerprint(image_tree, folders_only=True))
    assert stamps[0] == stamps[1] and len(set(stamps[1:])) == 4
    assert stat_fingerprint(image_tree).count("\n") > 2 * stamps[0].count("\n")  # a line a file, not a folder


def test_all_unreadable_is_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "train" / "happy"
    folder.mkdir(parents=True)
    (folder / "x.jpg").write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 1 images"):
        load_data(tmp_path / "a")


def test_images_of_any_mode_and_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "a" / "happy"
    folder.mkdir(parents=True)
    rgb = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    (folder / "rgba.png").write_bytes(jpeg_bytes(rgb, "PNG", "RGBA"))
    (folder / "palette.gif").write_bytes(jpeg_bytes(rgb, "GIF", "P"))
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes(rgb, "JPEG", "CMYK"))
    (folder / "big.bmp").write_bytes(jpeg_bytes(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8), "BMP"))
    (folder / "one.png").write_bytes(jpeg_bytes(np.full((1, 1), 7, np.uint8), "PNG"))
    (folder / "deep.png").write_bytes(jpeg_bytes((rng.integers(0, 65535, (50, 50))).astype(np.uint16), "PNG"))
    (tmp_path / "a" / "sad").mkdir()
    (tmp_path / "a" / "sad" / "x.webp").write_bytes(jpeg_bytes(rgb, "WEBP"))
    data = load_data(tmp_path / "a")
    assert data.raw.report.skipped_files == 0 and len(data.raw.images) == 7
    assert data.raw.images.shape == (7, 48, 48)


def test_zip_read_in_place_with_nested_top_folder(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "archive")
    zip_path = tmp_path / "archive.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in tree.rglob("*.jpg"):
            archive.write(path, Path("fer2013") / path.relative_to(tree))
    from_zip, from_folder = load_data(zip_path), load_data(tree)
    assert from_zip.splits_present() == ["test", "train"]
    assert from_zip.fingerprint == from_folder.fingerprint  # same faces, same order, same content


def test_zip_slip_members_are_ignored_and_nothing_written(tmp_path: Path) -> None:
    zip_path = tmp_path / "evil.zip"
    face = jpeg_bytes(np.full((48, 48), 100, np.uint8))
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("train/happy/ok.jpg", face)
        archive.writestr("train/sad/ok.jpg", face)
        archive.writestr("../../evil/happy/x.jpg", face)
        archive.writestr("/abs/happy/y.jpg", face)
        archive.writestr("train/sad/broken.jpg", face[:40])  # a decode failure must not hide the unsafe ones
    before = set(tmp_path.parent.parent.rglob("*.jpg"))
    data = load_data(zip_path)
    report = data.raw.report
    assert len(data.raw.images) == 2 and report.skipped_files == 1
    assert report.unsafe_members == ["../../evil/happy/x.jpg", "/abs/happy/y.jpg"]
    assert "broken.jpg" in report.summary()
    assert "ignored 2 zip member(s) with unsafe paths, e.g. ../../evil/happy/x.jpg" in report.summary()
    assert set(tmp_path.parent.parent.rglob("*.jpg")) == before  # nothing extracted anywhere
    assert not Path("/abs").exists() and not (Path.cwd().parent.parent / "evil").exists()


def test_zip_bomb_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fercore.data import sources

    zip_path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/happy/big.png", b"\0" * 3_000_000)
    monkeypatch.setattr(sources, "MAX_ZIP_UNCOMPRESSED", 1_000_000)
    with pytest.raises(UserError, match="zip bomb"):
        load_data(zip_path)


def test_an_encrypted_zip_member_is_skipped_with_its_reason(tmp_path: Path) -> None:
    zip_path = tmp_path / "archive.zip"
    face = jpeg_bytes(np.full((48, 48), 100, np.uint8))
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name in ("train/happy/a.jpg", "train/sad/b.jpg", "train/sad/locked.jpg"):
            archive.writestr(name, face)
    raw = bytearray(zip_path.read_bytes())  # zipfile cannot encrypt: set the "encrypted" flag of the last member
    local = raw.rfind(b"PK\x03\x04")
    central = raw.rfind(b"PK\x01\x02")
    raw[local + 6] |= 1
    raw[central + 8] |= 1
    zip_path.write_bytes(bytes(raw))
    data = load_data(zip_path)
    assert len(data.raw.images) == 2 and data.raw.report.skipped_files == 1
    assert "locked.jpg" in data.raw.report.summary() and "encrypted" in data.raw.report.summary()


def test_a_zip_of_fer2013_csv_reads_like_the_csv(tmp_path: Path) -> None:
    rows = [f"{label},{_pixels(label * 30)},{usage}" for label in range(7) for usage in ("Training", "PublicTest")]
    table = _csv(tmp_path / "fer2013.csv", rows)
    with zipfile.ZipFile(tmp_path / "challenge.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__MACOSX/fer2013/._fer2013.csv", "not a table")
        archive.writestr("example_submission.csv", "Id,Label\n")
        archive.write(table, "fer2013/fer2013.csv")
    zipped, plain = load_data(tmp_path / "challenge.zip").raw, load_data(table).raw
    assert np.array_equal(zipped.images, plain.images) and np.array_equal(zipped.emotions, plain.emotions)
    assert list(zipped.splits) == list(plain.splits)


def test_a_zipped_csv_with_an_unsafe_path_is_not_read(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "up.zip", "w") as archive:
        archive.writestr("../fer2013.csv", f"emotion,pixels\n0,{_pixels(0)}\n1,{_pixels(1)}\n")
    with pytest.raises(UserError, match="no emotion folders in up.zip"):
        load_data(tmp_path / "up.zip")


def test_a_zipped_csv_with_bad_rows_is_named_inside_its_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "challenge.zip", "w") as archive:
        archive.writestr("data/icml_face_data.csv", f"emotion, Usage, pixels\n9,Training,{_pixels(1)}\n")
    with pytest.raises(UserError, match=r"^challenge.zip: data/icml_face_data.csv: bad rows: line 2: emotion 9"):
        load_data(tmp_path / "challenge.zip")


def test_a_zipped_csv_that_expands_like_a_bomb_is_refused_unread(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fer2013.csv", "emotion,pixels\n" + f"0,{_pixels(0)}\n" * 2000)
    with pytest.raises(UserError, match=r"zip member fer2013.csv expands \d+x \(zip bomb\?\)"):
        load_data(tmp_path / "bomb.zip")


def test_a_zipped_csv_with_damaged_compressed_data_is_one_line(tmp_path: Path) -> None:
    rows = "".join(f"{label},{' '.join(str((label * 37 + i) % 256) for i in range(2304))},Training\n"
                   for label in range(7))
    with zipfile.ZipFile(tmp_path / "damaged.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fer2013.csv", "emotion,pixels,Usage\n" + rows)
    raw = bytearray((tmp_path / "damaged.zip").read_bytes())
    raw[200:260] = bytes(60)  # inside the member's compressed data (its local header ends at 41)
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="^damaged.zip is damaged: Error -3 while decompressing"):
        load_data(tmp_path / "damaged.zip")


def test_a_zipped_csv_that_zipfile_cannot_read_is_one_line(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "locked.zip", "w") as archive:
        archive.writestr("fer2013.csv", f"emotion,pixels\n0,{_pixels(0)}\n")
    raw = bytearray((tmp_path / "locked.zip").read_bytes())  # zipfile cannot encrypt: set the members' flags
    raw[raw.rfind(b"PK\x03\x04") + 6] |= 1
    raw[raw.rfind(b"PK\x01\x02") + 8] |= 1
    (tmp_path / "locked.zip").write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"^locked.zip: cannot read its table \(.*encrypted.*\); unzip it"):
        load_data(tmp_path / "locked.zip")


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "archive.zip"
    path.write_bytes(b"PK not really")
    with pytest.raises(UserError, match="not a valid zip"):
        load_data(path)


def _csv(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _pixels(value: int, n: int = 2304) -> str:
    return " ".join([str(value)] * n)


def test_csv_with_usage_maps_splits_and_fer_label_order(tmp_path: Path) -> None:
    rows = [f"{label},{_pixels(label * 30)},{usage}" for label in range(7)
            for usage in ("Training", "Training", "PublicTest", "PrivateTest")]
    data = load_data(_csv(tmp_path / "fer2013.csv", rows))
    assert data.splits_present() == ["test", "train", "val"]
    test = data.split("test")
    for face, label in zip(test.images, test.labels):  # csv label 6 is neutral, not surprise
        assert EMOTIONS[label] == FER2013_CSV_ORDER[int(face[0, 0]) // 30]


def test_a_csv_saved_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    rows = [f"{label},{_pixels(label)},Training" for label in range(7)]
    plain = _csv(tmp_path / "plain.csv", rows)
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # as Excel saves "CSV UTF-8"
    assert np.array_equal(load_data(marked).raw.images, load_data(plain).raw.images)
    with zipfile.ZipFile(tmp_path / "marked.zip", "w") as archive:
        archive.write(marked, "fer2013.csv")
    assert np.array_equal(load_data(tmp_path / "marked.zip").raw.emotions, load_data(plain).raw.emotions)


def test_csv_without_usage(tmp_path: Path) -> None:
    rows = [f"{label},{_pixels(label)}" for label in range(7) for _ in range(3)]
    data = load_data(_csv(tmp_path / "f.csv", rows, header="emotion,pixels"))
    assert data.splits_present() == ["all"]


@pytest.mark.parametrize("row, message", [
    (f"3,{_pixels(1, 2000)},Training", "line 3: 2000 pixels, expected 2304"),
    (f"9,{_pixels(1)},Training", "line 3: emotion 9 out of range"),
    (f"3,{_pixels(1, 2303)} x,Training", "line 3: non-numeric"),
    (f"3,{_pixels(300)},Training", "line 3: pixel values outside"),
    (f"3,{_pixels(1)},Trainng", "line 3: Usage 'Trainng' is not one of Training, PublicTest, PrivateTest"),
])
def test_csv_bad_rows_are_reported_by_line(tmp_path: Path, row: str, message: str) -> None:
    path = _csv(tmp_path / "f.csv", [f"0,{_pixels(5)},Training", row])
    with pytest.raises(UserError, match=message):
        load_data(path)


def test_a_csv_pixel_too_large_for_any_integer_is_a_bad_row(tmp_path: Path) -> None:
    path = _csv(tmp_path / "f.csv", [f"0,{_pixels(5)},Training", f"0,{_pixels(5, 2303)} 99999999999999999999,Training"])
    with pytest.raises(UserError, match="^f.csv: bad rows: line 3: pixel values outside 0-255$"):
        load_data(path)


def test_csv_field_over_the_csv_modules_limit_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="CSV line 3: field larger than field limit"):
        load_data(_csv(tmp_path / "f.csv", [f"0,{_pixels(5)},Training", f"0,{_pixels(5, 70_000)},Training"]))


def test_csv_wrong_header(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="header must have 'emotion' and 'pixels'"):
        load_data(_csv(tmp_path / "f.csv", ["1,2"], header="label,image"))


def test_a_binary_file_named_csv_is_one_printable_line(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"\x7fELF\x02\x01\x00\x00\x1b[31m" + bytes(range(256)) * 40)
    with pytest.raises(UserError) as caught:
        load_data(path)
    message = str(caught.value)
    assert message.startswith("CSV header must have 'emotion' and 'pixels'") and "\\x7fELF" in message
    assert message.isprintable() and len(message) < 200


def test_second_load_hits_the_cache(image_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_data(image_tree)

    def no_decoding(path: Path) -> None:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setitem(READERS, "folder", no_decoding)
    second = load_data(image_tree)
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.raw.images, first.raw.images)
    monkeypatch.chdir(image_tree.parent)  # the same folder spelled otherwise: relative, with a detour
    for spelling in (image_tree.name, f"./{image_tree.name}/", f"../{image_tree.parent.name}/{image_tree.name}"):
        assert load_data(spelling).fingerprint == first.fingerprint


def test_the_cache_drops_the_least_recently_used_sets_beyond_its_limit(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    trees = [write_image_tree(tmp_path / f"tree{i}", per_class=1) for i in range(3)]
    for tree in [*trees, trees[0]]:  # tree0 used again: the most recent
        load_data(tree)
        time.sleep(0.05)  # file times tick at the kernel's clock (a few ms): the order of use must show in them
    entry = next(dataset_module.cache_dir().glob("*.npz")).stat().st_size
    assert len(list(dataset_module.cache_dir().glob("*.npz"))) == 3
    monkeypatch.setattr(dataset_module, "CACHE_LIMIT_BYTES", int(entry * 2.5))
    (trees[1] / "train" / "happy" / "new.jpg").write_bytes(jpeg_bytes(np.full((48, 48), 9, np.uint8)))
    load_data(trees[1])  # a new entry: room for two, the new one and the most recently used (tree0)
    assert len(list(dataset_module.cache_dir().glob("*.npz"))) == 2

    def no_decoding(path: Path) -> None:
        raise AssertionError("decoded again instead of using the cache")
    monkeypatch.setitem(READERS, "folder", no_decoding)
    load_data(trees[0])
    load_data(trees[1])
    with pytest.raises(AssertionError, match="decoded again"):
        load_data(trees[2])


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short"])
def test_a_damaged_cache_entry_is_rebuilt(image_tree: Path, damage: bytes) -> None:
    first = load_data(image_tree)
    (entry,) = dataset_module.cache_dir().glob("*.npz")
    entry.write_bytes(damage)
    second = load_data(image_tree)
    np.testing.assert_array_equal(second.raw.images, first.raw.images)
    assert entry.stat().st_size > len(damage)  # written anew


def test_cache_is_invalidated_when_a_file_changes(image_tree: Path) -> None:
    first = load_data(image_tree)
    (image_tree / "train" / "happy" / "new.jpg").write_bytes(jpeg_bytes(np.full((48, 48), 9, np.uint8)))
    second = load_data(image_tree)
    assert len(second.raw.images) == len(first.raw.images) + 1


def test_synthetic_source(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_data("synthetic:700")
    assert len(data.raw.images) == 700 and data.splits_present() == ["test", "train"]
    with pytest.raises(UserError, match="synthetic size"):
        load_data("synthetic:5")
    with pytest.raises(UserError, match="bad synthetic size in 'synthetic:'"):
        load_data("synthetic:")
    assert dataset_module.is_synthetic("synthetic") and not dataset_module.is_synthetic("synthetics/x")


def test_missing_source_and_unknown_split(image_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data not found"):
        load_data(tmp_path / "nope")
    with pytest.raises(UserError, match="has no val split|unknown split"):
        load_data(image_tree).split("validation")
    with pytest.raises(UserError, match="has no test split"):
        load_data(write_image_tree(tmp_path / "b", splits=("train",))).split("test")


def test_an_interrupt_while_decoding_drops_the_images_not_begun(monkeypatch: pytest.MonkeyPatch) -> None:
    import _thread
    import threading

    from fercore.data import sources

    decoded: list[int] = []
    lock = threading.Lock()

    def slow_decode(data: bytes) -> np.ndarray:
        with lock:
            decoded.append(1)
            if len(decoded) == 1:
                _thread.interrupt_main()  # Ctrl-C, a SIGTERM or the run's STOP file, while the pool works
        time.sleep(0.001)
        return np.zeros((48, 48), np.uint8)

    monkeypatch.setattr(sources, "decode_face", slow_decode)
    entries = [sources._Entry(("train", "happy"), f"{i}.jpg", lambda: b"") for i in range(20 * sources.DECODE_CHUNK)]
    with pytest.raises(KeyboardInterrupt):
        sources._decode_entries(entries, "big")
    assert len(decoded) <= 8 * sources.DECODE_CHUNK  # the chunks running then, not all 20 (map cancels the rest)
