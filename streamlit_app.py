"""FER Studio, the app: `streamlit run streamlit_app.py`. Only navigation here; each page is a script in pages/."""
import streamlit as st

from fercore.app.settings import unbound_server_refusal

st.set_page_config(page_title="FER Studio", page_icon="🙂", layout="wide")
if refusal := unbound_server_refusal(st.get_option("server.address")):
    st.error(refusal, icon=":material/lan:")
    st.stop()
st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/mood:"),
]).run()
