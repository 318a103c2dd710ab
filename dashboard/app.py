"""Streamlit entry point: page setup and routing only (pages live in dashboard/pages/)."""

import streamlit as st

from pipeline.settings import Settings

st.set_page_config(page_title="Product tagger", page_icon="🏷️", layout="wide")


def home() -> None:
    settings = Settings()
    st.title("Product tagger")
    st.write("Upload product photos to get a caption, attribute tags and a short summary.")
    st.caption(f"Captioner: {settings.captioner} ({settings.caption_model}) · Summarizer: {settings.summarizer} · Data: {settings.data_dir}")
    st.info("The upload, review and export pages arrive with the dashboard issue; the CLI (`python -m pipeline tag`) works today.")


st.navigation([st.Page(home, title="Home", default=True)]).run()
