"""Predict: the emotions of the faces in photos, a camera snapshot, a video file or the live webcam."""
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from fercore import plots, rtc
from fercore.app import outputs, settings
from fercore.errors import SHOWN_AS_ONE_LINE
from fercore.live import LiveAnnotator, frames_to_annotate
from fercore.predict import ImagePrediction, Predictor
from fercore.video import MAX_SECONDS, VIDEO_TYPES
from pages._common import enter_app, explained_faces, load_predictor, mtime, picked_checkpoint, progress_bar

enter_app()

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
MAX_PHOTOS = 20  # shown per upload batch: each is decoded, detected and drawn


@st.cache_data(max_entries=2 * MAX_PHOTOS, ttl=1800, show_spinner=False)  # images of at most 1600 px: 8 MB
def annotated_photo(_predictor: Predictor, checkpoint: str, checkpoint_mtime: float, content: bytes,
                    name: str) -> outputs.AnnotatedPhoto:
    """Cached per model file and photo bytes (the predictor itself is not hashed: the checkpoint names it)."""
    return outputs.annotate_photo(_predictor, content, name)


def show_photo(predictor: Predictor, checkpoint: Path, content: bytes, name: str, key: str,
               explain: bool) -> ImagePrediction:
    """One photo: the annotated image and its download, and a probability chart per face (with where the model
    looked, if asked); one line for a bad file. Returns its prediction."""
    result = annotated_photo(predictor, str(checkpoint), mtime(checkpoint), content, name)
    prediction = result.prediction
    if prediction.error:
        st.error(f"{name}: {prediction.error}")
        return prediction
    with st.container(border=True):
        left, right = st.columns([3, 2])
        found = "no face found" if prediction.no_face_found else f"{len(prediction.faces)} face(s)"
        left.image(result.image, caption=f"{name}: {found}")
        left.download_button("Download annotated image", lambda: outputs.annotated_png(content, prediction),
                             f"{Path(name).stem}-annotated.png", "image/png", on_click="ignore", key=f"{key}-png")
        if prediction.no_face_found:
            right.info("No face found. Shown instead: the whole image classified as one face, which is only "
                       "meaningful when the image is a face crop.")
        loaded = predictor.loaded
        maps = explained_faces(loaded, str(checkpoint), mtime(checkpoint), loaded.dtype,
                               tuple(f.crop for f in prediction.faces),
                               tuple((f.label,) for f in prediction.faces)) if explain else []
        for i, face in enumerate(prediction.faces, 1):
            what = "the whole image" if prediction.no_face_found else f"face {i}"
            title = f"{what}: {face.label} {face.confidence:.0%}"
            right.plotly_chart(plots.probability_bars(face.probabilities, title), key=f"{key}-face{i}")
            if maps:
                ((occlusion, drawing),) = maps[i - 1]
                right.image(drawing, width=192, caption=f"Where {what} reads as {face.label}: {occlusion.describe()}")
    return prediction


def annotated_clip(predictor: Predictor, checkpoint: Path, clip: UploadedFile) -> outputs.AnnotatedClip:
    """The clip annotated, kept for this session while the file and the model are unchanged (the last one only:
    an annotated clip can be tens of MB); a progress bar while it is computed."""
    key = (clip.file_id, str(checkpoint), mtime(checkpoint))
    kept = st.session_state.get("predict-video-annotated")
    if kept and kept[0] == key:
        return kept[1]
    def describe(done: int, total: int) -> str:
        return f"Labelling {clip.name}: frame {done:,}" + (f" of about {total:,}" if total else "")
    with progress_bar(describe, start=f"Reading {clip.name}") as progress:
        clip.seek(0)
        annotated = outputs.annotate_clip(predictor, clip, clip.name, progress)
    st.session_state["predict-video-annotated"] = (key, annotated)
    return annotated


def show_clip(predictor: Predictor, checkpoint: Path, clip: UploadedFile) -> None:
    """One video: the annotated clip, its emotions over time and the downloads; one line for a bad file."""
    if clip.size > outputs.MAX_VIDEO_UPLOAD_MB * 1024**2:  # the uploader's cap is the browser's: check here
        st.error(f"{clip.name} is {clip.size / 1024**2:.0f} MB, over the limit of {outputs.MAX_VIDEO_UPLOAD_MB} MB")
        return
    try:
        annotated = annotated_clip(predictor, checkpoint, clip)
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        return
    result, classes = annotated.result, predictor.classes
    st.video(annotated.video, format="video/mp4")
    st.caption(f"{clip.name}: {result.summary(classes)}.")
    st.plotly_chart(plots.emotion_timeline(np.array(result.times), result.main_face_probabilities(classes), classes),
                    key="predict-video-timeline")
    st.caption(f"The largest face's emotions, frame by frame (each averaged over its last {result.smoothing} frames, "
               "as on the live webcam).")
    stem = Path(clip.name).stem
    left, right = st.columns(2)
    left.download_button("Download annotated video", lambda: annotated.video, f"{stem}-annotated.mp4", "video/mp4",
                         on_click="ignore", key="predict-video-mp4")
    right.download_button("Every face of every frame (CSV)", lambda: result.timeline_csv(classes), f"{stem}-faces.csv",
                          "text/csv", on_click="ignore", key="predict-video-csv")


def live_stats(annotator: LiveAnnotator) -> None:
    """How many frames the server has annotated and how fast (refreshed every second while the stream plays)."""
    st.caption(f"{annotator.frames:,} frames annotated · {annotator.fps:.1f} frames/s")


def live_webcam(predictor: Predictor) -> None:
    """The webcam through WebRTC, each frame annotated by a LiveAnnotator kept for this session and model."""
    try:
        ice_servers = settings.ice_servers()
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        return
    import av
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    first, second, third = st.columns(3)
    detect_every = first.slider("Detect faces every N frames", 1, 10, 3)
    detect_scale = second.select_slider("Detect on the frame scaled by", [0.25, 0.5, 0.75, 1.0], 0.5)
    smoothing = third.slider("Smooth labels over N frames", 1, 15, 5)
    annotator = st.session_state.get("live-annotator")  # one per session and model: it remembers faces
    if annotator is None or annotator.predictor is not predictor:
        annotator = st.session_state["live-annotator"] = LiveAnnotator(predictor)
    annotator.detect_every, annotator.detect_scale, annotator.smoothing = detect_every, detect_scale, smoothing

    async def annotate_frames(queued: list[av.VideoFrame]) -> list[av.VideoFrame]:
        """Every frame that arrived since the last call (a per-frame callback drops all but the newest whenever
        two arrive together)."""
        return [av.VideoFrame.from_ndarray(annotator.process(frame.to_ndarray(format="rgb24")), format="rgb24")
                for frame in frames_to_annotate(queued)]

    rtc.apply_test_settings()  # test-only switches from the environment; nothing in normal use
    stream = webrtc_streamer(key="live", mode=WebRtcMode.SENDRECV, rtc_configuration={"iceServers": ice_servers},
                             media_stream_constraints={"video": True, "audio": False},
                             queued_video_frames_callback=annotate_frames)
    if stream.state.playing:
        st.fragment(live_stats, run_every=1)(annotator)
    if not stream.state.playing:
        st.caption("No camera, or the browser refuses it? Upload photos in the Photos tab instead. The camera works "
                   "but the live stream does not connect? Camera snapshot labels one still frame (no WebRTC needed).")
    if not ice_servers:
        st.caption(f"No ICE servers configured: works when the browser reaches this server directly (same machine or "
                   f"network). For other setups give STUN/TURN servers in {settings.ICE_SERVERS_ENV}.")


st.title("Predict")
checkpoint, predictor = picked_checkpoint("predict-model", load_predictor)

photos, snapshot, video, webcam = st.tabs(["Photos", "Camera snapshot", "Video file", "Live webcam"])
EXPLAIN_HELP = ("For each face of a photo or snapshot: the 48x48 face the model read, coloured by how much hiding "
                "each part (a 12-pixel square of grey, one position at a time) changes the probability of the "
                "emotion it predicts. About a quarter of a second a face on one CPU core.")
with photos:
    explain_photos = st.toggle("Show where the model looks", key="explain-photos", help=EXPLAIN_HELP)
    uploads = st.file_uploader("Drop photos here", type=IMAGE_TYPES, accept_multiple_files=True,
                               max_upload_size=outputs.MAX_IMAGE_UPLOAD_MB)
    if len(uploads or []) > MAX_PHOTOS:
        st.info(f"Showing the first {MAX_PHOTOS} of {len(uploads)} photos.")
    shown = []
    for index, upload in enumerate((uploads or [])[:MAX_PHOTOS]):
        if upload.size > outputs.MAX_IMAGE_UPLOAD_MB * 1024**2:  # the uploader's cap is the browser's: check here
            st.error(f"{upload.name} is {upload.size / 1024**2:.0f} MB, over the limit of "
                     f"{outputs.MAX_IMAGE_UPLOAD_MB} MB")
            continue
        shown.append(show_photo(predictor, checkpoint, upload.getvalue(), upload.name, f"photo{index}",
                                explain_photos))
    if len(shown) > 1:
        st.download_button(f"Every face of these {len(shown)} photos (CSV)",
                           outputs.faces_csv(shown, predictor.classes), "faces.csv", "text/csv", on_click="ignore",
                           key="photos-csv")
with snapshot:
    explain_snapshot = st.toggle("Show where the model looks", key="explain-snapshot", help=EXPLAIN_HELP)
    picture = st.camera_input("Take a snapshot")
    if picture is not None:
        show_photo(predictor, checkpoint, picture.getvalue(), "snapshot", "snapshot", explain_snapshot)
with video:
    clip = st.file_uploader("Drop a video here", type=list(VIDEO_TYPES), max_upload_size=outputs.MAX_VIDEO_UPLOAD_MB,
                            key="predict-video", help=f"Up to {MAX_SECONDS // 60} minutes; every frame is labelled "
                                                      "with the live webcam's face tracking and smoothing (no sound)")
    if clip is not None:
        show_clip(predictor, checkpoint, clip)
with webcam:
    live_webcam(predictor)
