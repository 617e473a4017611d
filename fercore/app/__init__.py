"""What the Streamlit app needs from fercore beyond one engine call, a module per concern: settings (where
things live), launcher (training processes), model_menu (checkpoints to pick from and their cards), data_views
(uploads, face grids, augmentation previews) and outputs (downloads and annotated photos).

No Streamlit here (all of it is testable on its own), and no torch at import time (the home page stays fast):
functions that need torch import it when called.
"""
