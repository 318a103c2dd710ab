"""Widgets more than one page uses."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pipeline.models import BatchRecord
from pipeline.store import Store


BATCH_PICKER = "batch-picker"


def _picked_batch() -> None:
    st.session_state["batch_id"] = st.session_state[BATCH_PICKER]


def choose_batch(store: Store, describe: Callable[[BatchRecord], str], when_empty: str) -> int | None:
    """A batch picker that remembers the choice across pages (session state `batch_id`).

    Keyed, so the choice survives labels that change while a batch runs ("37/400 done"): an unkeyed
    selectbox is a new widget whenever its option labels change, and a pick made meanwhile was dropped.
    `batch_id` stays the source of truth (a page may set it, as Run does), copied into the picker."""
    batches = store.list_batches()
    if not batches:
        st.info(when_empty)
        return None
    ids = [b.id for b in batches]
    current = st.session_state.get("batch_id")
    if current not in ids:
        current = ids[0]
    st.session_state["batch_id"] = st.session_state[BATCH_PICKER] = current
    labels = {b.id: describe(b) for b in batches}
    return st.selectbox("Batch", ids, format_func=labels.get, key=BATCH_PICKER, on_change=_picked_batch)


_THUMBNAILS: dict[str, tuple[float, str | None]] = {}


def cached_thumbnail(images, location: str | None, ttl_s: float, max_entries: int = 20_000) -> str | None:
    """`images.thumbnail_url(location)`, kept for `ttl_s` in this process (a plain dict: cheaper per row
    than st.cache_data's hashing and pickling). Locations are content-keyed, so a photo never changes
    under its name; keep `ttl_s` well under a presigned URL's lifetime."""
    import time

    if not location:
        return None
    now = time.monotonic()
    hit = _THUMBNAILS.get(location)
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    url = images.thumbnail_url(location)
    if len(_THUMBNAILS) >= max_entries:
        for stale in list(_THUMBNAILS)[: max_entries // 10]:  # oldest first (insertion order)
            _THUMBNAILS.pop(stale, None)
    _THUMBNAILS.pop(location, None)
    _THUMBNAILS[location] = (now, url)
    return url
