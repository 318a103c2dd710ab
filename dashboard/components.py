"""Widgets more than one page uses."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import streamlit as st

from pipeline.admin import analytics
from pipeline.admin.endpoint import aws_problem
from pipeline.errors import UserFacingError
from pipeline.models import BatchRecord
from pipeline.store import Store

PERIOD_REUSE_S = 60.0  # analytics pages keep a period's figures this long while only the view changes


BATCH_PICKER = "batch-picker"


def _picked_batch() -> None:
    st.session_state["batch_id"] = st.session_state[BATCH_PICKER]


def choose_batch(store: Store, describe: Callable[[BatchRecord], str], when_empty: str, *, locked: bool = False) -> int | None:
    """A batch picker that remembers the choice across pages (session state `batch_id`).

    Keyed, so the choice survives labels that change while a batch runs ("37/400 done"): an unkeyed
    selectbox is a new widget whenever its option labels change, and a pick made meanwhile was dropped.
    `batch_id` stays the source of truth (a page may set it, as Run does), copied into the picker. `locked`: the page
    holds unsaved edits of this batch, which another batch would drop: the picker waits until they are saved or discarded."""
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
    return st.selectbox("Batch", ids, format_func=labels.get, key=BATCH_PICKER, on_change=_picked_batch, disabled=locked,
                        help="Save or discard the edits typed below before opening another batch." if locked else None)


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


def chart_text(value: object) -> str:
    """A label inside a plotly chart, shown literally (plotly reads <b>, <a href> and entities in labels)."""
    return html.escape(str(value), quote=False)


def store_problem(error: Exception, region: str) -> str:
    """One sentence: what AWS said (DynamoDB), the store's own words, or the kind of failure and what to do."""
    if isinstance(error, UserFacingError):
        return str(error)
    first_line = (str(error).splitlines() or [""])[0][:200]
    return aws_problem(error, region) or (
        f"{type(error).__name__}{': ' + first_line if first_line else ''}. Try again; if it persists, check the STORE settings.")


def period_figures(key: str, choice: str, compute: Callable[[datetime, datetime], Any]) -> tuple[datetime, datetime, Any]:
    """(since, until, compute(since, until)) for a period of analytics.PERIODS, kept for this session for
    PERIOD_REUSE_S while only the view changes (a widget on the page reruns the script; on DynamoDB a
    fresh read is one Query per batch). Popping session_state[key] forces a fresh read."""
    kept = st.session_state.get(key)
    if kept and kept[0] == choice and time.monotonic() - kept[1] < PERIOD_REUSE_S:
        return kept[2]
    since, until = analytics.period_bounds(choice)
    loaded = (since, until, compute(since, until))
    st.session_state[key] = (choice, time.monotonic(), loaded)
    return loaded
