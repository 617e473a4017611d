"""Faults and hostile input: fuzzed loaders, kill -9, a full disk, concurrency, memory, unsafe code patterns."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fercore import atomic
from fercore.checkpoint import read_checkpoint
from fercore.data import load_data
from fercore.data.images import ImageError, decode_face
from fercore.errors import UserError
from fercore.predict import Predictor
from fercore.runs import RunDir

ROOT = Path(__file__).resolve().parent.parent


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_decode_to_a_face_or_a_clear_error(data: bytes) -> None:
    try:
        face = decode_face(data)
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert face.shape == (48, 48) and face.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=8, max_value=400))
def test_corrupted_real_images_never_crash(noise: bytes, cut: int) -> None:
    whole = bytearray(_png(np.random.default_rng(len(noise)).integers(0, 255, (40, 30), dtype=np.uint8)))
    position = cut % len(whole)
    whole[position:position + len(noise)] = noise
    try:
        face = decode_face(bytes(whole))
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert face.shape == (48, 48) and face.dtype == np.uint8


_CSV_LINE = st.text(alphabet="0123456789 ,-x\"", max_size=60)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_CSV_LINE, max_size=6))
def test_any_csv_loads_or_names_its_problem(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(lines) + "\n")
    try:
        data = load_data(path, use_cache=False)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert data.raw.images.shape[1:] == (48, 48)


def test_a_full_disk_while_saving_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "best.pt"
    atomic.atomic_write_bytes(target, b"old checkpoint")

    def fill_disk(handle: io.BufferedWriter) -> None:
        handle.write(b"half a new checkp")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write(target, fill_disk)
    assert target.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


def _train_process(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "fercore", "train", *extra]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_kill_9_mid_epoch_leaves_intact_checkpoints_and_resume_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    common = ("--data", "synthetic:2100", "--arch", "basic", "--epochs", "4", "--batch-size", "16", "--threads", "1")
    proc = _train_process(run_dir, *common, "--run-dir", str(run_dir))
    run = RunDir(run_dir)
    _wait_for(lambda: run.file("last.pt").exists() and run.status().get("epoch", 0) >= 2
              and run.status().get("step", 0) > 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = run.status()
    assert status["state"] == "interrupted" and "killed or crashed" in status["error"]
    assert read_checkpoint(run.file("last.pt"))["train_state"]["position"]["epoch"] == 1
    assert read_checkpoint(run.file("best.pt"))["metrics"]["epoch"] == 1
    resumed = _train_process(run_dir, "--resume", str(run_dir))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert run.status()["state"] == "finished" and [e["epoch"] for e in run.epochs()] == [1, 2, 3, 4]


def test_sigterm_stops_cleanly_and_a_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "busy"
    proc = _train_process(run_dir, "--data", "synthetic:2100", "--arch", "basic", "--epochs", "50",
                          "--batch-size", "16", "--threads", "1", "--run-dir", str(run_dir))
    run = RunDir(run_dir)
    _wait_for(lambda: run.status().get("state") == "running" and run.file("last.pt").exists())
    second = _train_process(run_dir, "--resume", str(run_dir))
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and "already in use" in err, err
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # stopped, not finished: `train && ship` must not go on
    assert json.loads(out.strip().splitlines()[-1])["stopped"] is True
    assert run.status()["state"] == "stopped"
    assert "train_state" in read_checkpoint(run.file("last.pt"))


def test_concurrent_predictions_match_sequential(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(0)
    images = [astronaut_jpeg] + [_png(rng.integers(0, 255, (120, 100), dtype=np.uint8)) for _ in range(5)]
    expected = [predictor.predict_image(img).to_json() for img in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda img: predictor.predict_image(img).to_json(), images * 3))
    for result, want in zip(got, expected * 3):
        assert result["faces"][0]["label"] == want["faces"][0]["label"]
        assert result["faces"][0]["box"] == want["faces"][0]["box"]


def test_a_thousand_predictions_do_not_grow_memory(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    photo = _png(np.asarray(Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB").resize((96, 96))))

    def rss_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

    for _ in range(100):
        predictor.predict_image(photo)
    before = rss_mb()
    for _ in range(1000):
        assert len(predictor.predict_image(photo).faces) == 1  # no face detected: the whole image
    assert rss_mb() - before < 25


_UNSAFE = [
    (re.compile(r"torch\.load\((?![^)]*weights_only=True)"), "torch.load without weights_only=True"),
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"(?<![\w.])(eval|exec)\("), "eval/exec"),
    (re.compile(r"shell\s*=\s*True"), "shell=True"),
    (re.compile(r"\bos\.system\("), "os.system"),
]


def test_no_unsafe_code_patterns_in_the_product() -> None:
    files = [*ROOT.joinpath("fercore").rglob("*.py"), *ROOT.joinpath("pages").rglob("*.py"), ROOT / "streamlit_app.py"]
    found = [f"{path.relative_to(ROOT)}: {what}" for path in files if path.exists()
             for pattern, what in _UNSAFE if pattern.search(path.read_text())]
    assert found == []


def test_two_different_runs_at_once_both_finish(tmp_path: Path) -> None:
    common = ("--data", "synthetic:700", "--arch", "basic", "--epochs", "1", "--batch-size", "32", "--threads", "1")
    procs = [_train_process(tmp_path / name, *common, "--run-dir", str(tmp_path / name)) for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert [RunDir(tmp_path / n).status()["state"] for n in ("a", "b")] == ["finished", "finished"]


def test_a_30_megapixel_photo_is_downscaled_not_choked_on(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    photo = Image.open(io.BytesIO(astronaut_jpeg)).resize((6000, 5000), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=70)
    result = Predictor.from_checkpoint(tiny_checkpoint).predict_image(buffer.getvalue(), "big.jpg")
    assert result.error is None and not result.no_face_found
    x, y, w, h = result.faces[0].box  # in the photo's own pixels: the face is near (2200, 1150)
    assert 1500 < x + w / 2 < 3000 and 600 < y + h / 2 < 1800


def test_atomic_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    atomic.atomic_write_bytes(tmp_path / "f", b"x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK


def test_more_threads_than_cores_are_the_cores() -> None:
    import torch

    from fercore import hardware

    before = torch.get_num_threads()
    try:  # 100,000 threads crashed torch (exit 139, no message)
        assert hardware.configure_threads(100_000) == hardware.usable_cores() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_a_save_that_fills_the_disk_is_an_os_error_and_keeps_the_previous_file(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from types import SimpleNamespace

    import torch

    from fercore.checkpoint import save_checkpoint

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": torch.zeros(1)})

    def full_disk(obj: object, handle: io.BufferedWriter) -> None:
        handle.write(b"part")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 379968 vs 379864")
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(free=4096))
    with pytest.raises(OSError) as raised:
        save_checkpoint(path, {"a": torch.ones(1)})
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["a"].item() == 0 and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_warning_filters_are_changed_by_one_thread_at_a_time() -> None:
    """Two app sessions silencing warnings at once must not leave the process's filters changed for good."""
    import threading
    import warnings

    from fercore import quiet
    from fercore.quiet import no_warnings

    before = list(warnings.filters)
    inside, leave, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with no_warnings():
            inside.set()
            leave.wait(5)

    def second() -> None:
        inside.wait(5)
        with no_warnings():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert inside.wait(5) and not quiet._FILTERS_LOCK.acquire(blocking=False)  # held by the first thread
    assert not second_in.wait(0.3)  # so the second waits while the first has them changed
    leave.set()
    for thread in threads:
        thread.join(5)
    assert second_in.is_set() and warnings.filters == before
