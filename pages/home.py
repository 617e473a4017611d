"""Home: what FER Studio does, the shipped model's card, the runs found on disk, and the way to each page."""
import streamlit as st

from fercore import paths
from fercore.app import model_menu
from fercore.errors import SHOWN_AS_ONE_LINE
from fercore.runs import list_runs
from pages._common import enter_app, runs_table, show_card

enter_app()

st.title("FER Studio")
st.markdown(
    "Recognises seven emotions (angry, disgust, fear, happy, neutral, sad, surprise) in faces, with CNNs trained "
    "from scratch.  \n"
    "**Train** a model on FER2013 or on built-in synthetic faces and watch it learn; **Evaluate** it on held-out "
    "faces.  \n"
    "**Predict** the emotions in your photos, a camera snapshot or your live webcam.")

st.subheader("The shipped model")
if model_menu.SHIPPED_CHECKPOINT.is_file():
    try:
        show_card(model_menu.SHIPPED_CHECKPOINT)
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
else:
    st.warning(f"The shipped model {model_menu.SHIPPED_CHECKPOINT.name} is missing: restore it from the repository "
               "(`git checkout -- checkpoints/fer2013.pt`) or make one (`python -m fercore train --preset fer2013 "
               "--data FER2013_FOLDER --run-dir runs/mine`, then `python -m fercore ship --checkpoint runs/mine "
               "--data FER2013_FOLDER`; the README's *Reproduce it* gives the shipped recipe). "
               "Until then, Evaluate and Predict work with any run's best.pt.")

st.subheader("Training runs")
runs = list_runs(paths.runs_dir())
if runs:
    runs_table(runs)
else:
    st.caption(f"No runs yet in {paths.runs_dir()}.")

st.subheader("Go to")
left, middle, right = st.columns(3)
left.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
middle.page_link("pages/evaluate.py", label="Evaluate a checkpoint", icon=":material/fact_check:")
right.page_link("pages/predict.py", label="Predict on photos or webcam", icon=":material/mood:")
