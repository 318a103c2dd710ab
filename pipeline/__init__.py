"""Product-tagging pipeline: photo -> normalized image -> caption + attributes -> summary -> store -> CSV.

A typed, UI-free library shared by the Streamlit dashboard and the CLI.
"""
