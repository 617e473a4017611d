"""Video files: every frame labelled into a new H.264 MP4, the timeline, the limits and the CLI."""
from __future__ import annotations

import csv
import io
import os
import stat
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fercore import plots, video
from fercore.cli import main
from fercore.errors import UserError
from fercore.predict import Predictor
from fercore.video import annotate_video


def write_clip(path: Path, frames: int = 8, fps: int = 10, size: tuple[int, int] = (320, 240),
               face: bool = True, ticks: list[int] | None = None, container: str | None = None) -> Path:
    """A short MPEG-4 clip: the astronaut's face drifting down a pixel a frame (or a grey frame without a face);
    ticks: each frame's time in 1/fps steps (a variable frame rate); container: say h264 for a raw stream."""
    from skimage.data import astronaut

    base = np.asarray(Image.fromarray(astronaut()).resize((size[0], size[0])))
    options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
    codec = "libx264" if container == "h264" else "mpeg4"
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, tick in enumerate(ticks or range(frames)):
            rgb = base[i:i + size[1]] if face else np.full((size[1], size[0], 3), 128, np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = tick, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint)


def decoded_frames(path: Path) -> tuple[str, int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, frames, (stream.width, stream.height)


def test_every_frame_is_labelled_into_an_h264_mp4(predictor: Predictor, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    seen = []
    result = annotate_video(clip, tmp_path / "out.mp4", predictor, lambda done, total: seen.append((done, total)))
    assert (result.frames, result.fps, result.width, result.height) == (8, 10.0, 320, 240)
    assert decoded_frames(tmp_path / "out.mp4") == ("h264", 8, (320, 240))
    assert all(len(faces) == 1 for faces in result.faces)  # the astronaut's face in every frame
    assert [done for done, _ in seen] == list(range(1, 9)) and seen[-1][1] == 8
    rows = list(csv.DictReader(io.StringIO(result.timeline_csv(predictor.classes))))
    assert len(rows) == 8 and rows[3]["seconds"] == "0.300" and rows[3]["label"] == result.faces[3][0].label
    assert sum(float(rows[0][c]) for c in predictor.classes) == pytest.approx(1, abs=1e-3)
    probabilities = result.main_face_probabilities(predictor.classes)
    assert probabilities.shape == (8, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    shares = result.main_face_shares(predictor.classes)
    assert sum(shares.values()) == pytest.approx(1)
    assert result.summary(predictor.classes).startswith("8 frames, 0.8 s at 10 frames/s, 320x240; faces in 8 of them")
    assert not list(tmp_path.glob(".*partial*"))


def test_frames_without_faces_and_large_frames(predictor: Predictor, tmp_path: Path) -> None:
    result = annotate_video(write_clip(tmp_path / "grey.mp4", frames=3, face=False), tmp_path / "out.mp4", predictor)
    assert result.faces == [[], [], []] and np.isnan(result.main_face_probabilities(predictor.classes)).all()
    rows = list(csv.reader(io.StringIO(result.timeline_csv(predictor.classes))))
    assert len(rows) == 4 and rows[1][:3] == ["0", "0.000", ""] and set(rows[1][2:]) == {""}
    assert result.summary(predictor.classes).endswith("faces in 0 of them; the largest face: no face")
    wide = annotate_video(write_clip(tmp_path / "wide.mp4", frames=2, size=(1600, 900)), tmp_path / "w.mp4",
                          predictor)
    assert (wide.width, wide.height) == (1280, 720) and decoded_frames(tmp_path / "w.mp4")[2] == (1280, 720)
    figure = plots.emotion_timeline(np.arange(3) / 10, result.main_face_probabilities(predictor.classes),
                                    predictor.classes)
    assert [trace.name for trace in figure.data] == list(predictor.classes)


def test_bad_and_long_videos_are_refused_and_nothing_is_lost(predictor: Predictor, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(UserError, match=r"^notes.mp4 is not a video this app can read$"):
        annotate_video(tmp_path / "notes.mp4", out, predictor)
    clip = write_clip(tmp_path / "clip.mp4")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[:200])  # its header, part of its index, no frame
    with pytest.raises(UserError, match=r"^cut.mp4 has no video stream$"):
        annotate_video(truncated, out, predictor)
    monkeypatch.setattr(video, "annotate", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):  # a failure while writing, as the first frame is drawn
        annotate_video(clip, out, predictor)
    monkeypatch.undo()
    monkeypatch.setattr(video, "MAX_SECONDS", 0.5)
    with pytest.raises(UserError, match=r"^holiday.mp4 lasts 0.8 s, over the limit of 0.5 s$"):
        annotate_video(clip, out, predictor, name="holiday.mp4")
    raw = write_clip(tmp_path / "raw.h264", frames=20, container="h264")  # a stream that does not say how long
    with pytest.raises(UserError, match=r"^raw.h264 lasts over the limit of 0.5 s$"):
        annotate_video(raw, out, predictor)
    assert out.read_bytes() == b"an earlier result" and sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4", "cut.mp4", "notes.mp4", "out.mp4", "raw.h264"]


def test_a_file_that_breaks_off_is_labelled_as_far_as_it_goes() -> None:
    class Broken:
        def __init__(self, good: int):
            self.good = good

        def decode(self, stream: object) -> Iterator[str]:
            yield from ["frame"] * self.good
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    with pytest.raises(UserError, match=r"^a.mp4 is not a video this app can read$"):
        list(video._Frames(Broken(0), None, "a.mp4"))
    for good, frames in ((1, "1 frame"), (2, "2 frames")):
        frames_read = video._Frames(Broken(good), None, "a.mp4")
        assert list(frames_read) == ["frame"] * good
        assert frames_read.broke == (f"the file breaks off after {frames} (Invalid data found when processing "
                                     "input): labelled as far as it goes")


def test_a_clip_cut_short_is_labelled_as_far_as_it_goes_and_says_so(predictor: Predictor, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=40)  # its index at the front: the frames go missing, not it
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])
    result = annotate_video(tmp_path / "cut.mp4", tmp_path / "out.mp4", predictor)
    assert 0 < result.frames < 40 and result.break_note
    assert result.summary(predictor.classes).endswith(f"; {result.break_note}")
    whole = annotate_video(clip, tmp_path / "whole.mp4", predictor)
    assert whole.break_note == "" and "cut short" not in whole.summary(predictor.classes)


def test_each_frame_keeps_its_time_and_turns_upright(predictor: Predictor, tmp_path: Path) -> None:
    ticks = [0, 1, 2, 12, 13, 14]  # a variable frame rate: a second's pause after the third frame
    result = annotate_video(write_clip(tmp_path / "vfr.mp4", ticks=ticks), tmp_path / "out.mp4", predictor)
    assert result.times == pytest.approx([t / 10 for t in ticks])
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert [float(f.time) for f in written.decode(video=0)] == pytest.approx([t / 10 for t in ticks], abs=1e-3)
    rows = list(csv.DictReader(io.StringIO(result.timeline_csv(predictor.classes))))
    assert [row["seconds"] for row in rows] == ["0.000", "0.100", "0.200", "1.200", "1.300", "1.400"]
    late = annotate_video(write_clip(tmp_path / "late.mp4", ticks=[5, 6, 7]), tmp_path / "o.mp4", predictor)
    assert late.times == pytest.approx([0, 0.1, 0.2])  # from the first frame, as the MP4 written plays
    frame = np.arange(6).reshape(2, 3)[..., None]  # rows 0 1 2 / 3 4 5
    assert video._upright(frame, 0) is frame
    assert video._upright(frame, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # turned a quarter to the left
    assert video._upright(frame, -90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert video._upright(frame, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]


def test_the_video_command(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    assert main(["video", str(clip), "--checkpoint", str(tiny_checkpoint), "--csv", str(tmp_path / "f.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{clip}: 4 frames, 0.4 s at 10 frames/s, 320x240; faces in 4 of them; the largest")
    assert out[1:] == [f"wrote {tmp_path / 'clip-annotated.mp4'}", f"wrote {tmp_path / 'f.csv'}"]
    assert decoded_frames(tmp_path / "clip-annotated.mp4")[1] == 4
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 5
    assert main(["video", str(clip), "--out", str(clip), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err.strip() == f"fercore: error: --out {clip} is the video itself: name another file"
    before = clip.read_bytes()
    for flags, message in ((["--csv", str(clip)], f"--csv {clip} is the video itself: name another file"),
                           (["--out", str(tmp_path / "a.mp4"), "--csv", str(tmp_path / "a.mp4")],
                            f"--csv {tmp_path / 'a.mp4'} is the annotated video (--out): name another file"),
                           (["--csv", str(tmp_path)], f"--csv {tmp_path} is a folder: name the file to write")):
        assert main(["video", str(clip), *flags, "--checkpoint", str(tiny_checkpoint)]) == 2
        assert capsys.readouterr().err.strip() == f"fercore: error: {message}"
        assert clip.read_bytes() == before and not (tmp_path / "a.mp4").exists()
    assert main(["video", str(clip), "--out", str(tmp_path / "x.avi"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "give a name ending in .mp4" in capsys.readouterr().err
    assert main(["video", str(tmp_path / "missing.mp4")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_a_phone_clip_is_turned_upright(predictor: Predictor, tmp_path: Path) -> None:
    """A landscape clip marked, as phones mark portrait ones, to be shown turned a quarter clockwise."""
    with av.open(str(tmp_path / "flat.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for _ in range(3):
            rgb = np.zeros((32, 64, 3), np.uint8)
            rgb[:8, :8] = 255  # a white top-left corner
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    data = bytearray((tmp_path / "flat.mp4").read_bytes())
    matrix = data.find(b"tkhd") + 4 + 4 + 4 * 5 + 8 + 8  # version 0: flags, times, ids, duration, reserved, layer...
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    (tmp_path / "phone.mp4").write_bytes(bytes(data))
    result = annotate_video(tmp_path / "phone.mp4", tmp_path / "out.mp4", predictor)
    assert (result.width, result.height) == (32, 64)
    with av.open(str(tmp_path / "out.mp4")) as written:
        first = next(written.decode(video=0)).to_ndarray(format="rgb24")
    assert first[:6, -6:].mean() > 200 and first[:6, :6].mean() < 50  # the corner went to the top right


def test_a_tiny_video_is_refused_and_the_output_gets_the_usual_permissions(predictor: Predictor,
                                                                         tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^strip.mp4 is 64x8: too small to hold a face$"):
        annotate_video(write_clip(tmp_path / "strip.mp4", frames=2, size=(64, 8)), tmp_path / "o.mp4", predictor)
    annotate_video(write_clip(tmp_path / "clip.mp4", frames=2), tmp_path / "o.mp4", predictor)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "o.mp4").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "o.mp4", "strip.mp4"]


def test_a_clip_that_changes_its_frame_size_is_letterboxed_not_stretched(predictor: Predictor,
                                                                         tmp_path: Path) -> None:
    path = tmp_path / "sizes.mkv"  # Motion JPEG: two grey 320x240 frames, then two white 160x240 ones
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj420p"
        stream.codec_context.time_base = Fraction(1, 10)
        narrow = av.CodecContext.create("mjpeg", "w")
        narrow.width, narrow.height, narrow.pix_fmt, narrow.time_base = 160, 240, "yuvj420p", Fraction(1, 10)
        for i in range(4):
            context, shape = (stream.codec_context, (240, 320)) if i < 2 else (narrow, (240, 160))
            frame = av.VideoFrame.from_ndarray(np.full((*shape, 3), 255 if i >= 2 else 128, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in context.encode(frame):
                packet.stream = stream
                out.mux(packet)
    result = annotate_video(path, tmp_path / "out.mp4", predictor)
    assert (result.frames, result.width, result.height) == (4, 320, 240)
    with av.open(str(tmp_path / "out.mp4")) as written:
        last = list(written.decode(video=0))[-1].to_ndarray(format="rgb24")
    assert last.shape == (240, 320, 3)
    assert last[:, :70].mean() < 20 and last[:, -70:].mean() < 20 and last[:, 90:230].mean() > 235  # bars beside it
    odd = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    assert np.array_equal(video._fitted(odd, 6, 4), odd[:4, :6])  # the first size: cropped to even sides only
