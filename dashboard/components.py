"""Widgets more than one page uses."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pipeline.models import BatchRecord
from pipeline.store import Store


def choose_batch(store: Store, describe: Callable[[BatchRecord], str], when_empty: str) -> int | None:
    """A batch picker that remembers the choice across pages (session state `batch_id`)."""
    batches = store.list_batches()
    if not batches:
        st.info(when_empty)
        return None
    ids = [b.id for b in batches]
    current = st.session_state.get("batch_id", ids[0])
    labels = {b.id: describe(b) for b in batches}
    chosen = st.selectbox("Batch", ids, index=ids.index(current) if current in ids else 0, format_func=labels.get)
    st.session_state["batch_id"] = chosen
    return chosen
