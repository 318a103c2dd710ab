"""Review: edit captions, summaries, tags and attributes; approve or reject; see each item's history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import choose_batch
from dashboard.runtime import current_user, get_runtime
from dashboard.text import inert, say
from pipeline.batches.review import (
    SaveReport, grid_rows, item_label, regenerate_summaries, save_changes, set_review_status, summary_word_problems,
)
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words

runtime = get_runtime()
user = current_user(runtime)
store, schema = runtime.stages.store, runtime.stages.schema
EDITABLE = ["Select", "Status", "Title", "Caption", "Summary", "Tags", *schema.names()]


def show_flash() -> None:
    """Messages from the previous run (saving reruns the page so the grid shows stored values)."""
    for kind, text in st.session_state.pop("flash", []):
        getattr(st, kind)(text)


def report_and_refresh(report: SaveReport, done: str) -> None:
    """Saved edits are already in the store when this runs; only then does the page say so."""
    flash = [("success", f"{done}: {len(report.saved)} change{'s' * (len(report.saved) != 1)} saved.")] if report.saved else []
    flash += [("error", inert(message)) for message in report.refused]  # they name the item (SKU / file name)
    if report.refused:
        for kind, text in flash:  # keep the grid as typed so nothing refused is lost
            getattr(st, kind)(text)
        return
    st.session_state["flash"] = flash or [("info", "Nothing changed.")]
    st.session_state["grid_version"] = st.session_state.get("grid_version", 0) + 1
    st.rerun()


def pending_changes(key: str, frame: pd.DataFrame) -> dict[int, dict]:
    edited_rows = st.session_state.get(key, {}).get("edited_rows", {})
    return {int(frame.index[int(row)]): columns for row, columns in edited_rows.items()}


def render_grid(batch_id: int, items) -> None:
    frame = pd.DataFrame(grid_rows(items, schema)).set_index("id")
    key = f"grid-{batch_id}-{st.session_state.get('grid_version', 0)}"
    versions = st.session_state.setdefault(f"{key}-versions", {item.id: item.version for item in items})  # as first shown
    edited = st.data_editor(
        frame, key=key, hide_index=True, width="stretch",
        disabled=[column for column in frame.columns if column not in EDITABLE],
        column_config={
            "Select": st.column_config.CheckboxColumn("Select", width="small"),
            "Status": st.column_config.SelectboxColumn("Status", options=["pending", "approved", "rejected"], required=True),
            "Summary": st.column_config.TextColumn("Summary", width="large", help=f"At most {MAX_SUMMARY_WORDS} words"),
            "Words": st.column_config.NumberColumn("Words", help="Word count of the saved summary"),
        },
    )
    changes = pending_changes(key, frame)
    labels = {item.id: item_label(item) for item in items}
    for problem in summary_word_problems(changes, labels):
        st.warning(inert(problem) + " It will not be saved until it is shorter.")
    selected = [int(item_id) for item_id in edited.index[edited["Select"]]]

    save, approve, reject, regenerate = st.columns(4)
    if save.button("Save changes", type="primary", disabled=not changes):
        report_and_refresh(save_changes(store, changes, schema, user.email, versions), "Saved")
    if approve.button(f"Approve selected ({len(selected)})", disabled=not selected):
        report_and_refresh(set_review_status(store, selected, "approved", user.email, versions), "Approved")
    if reject.button(f"Reject selected ({len(selected)})", disabled=not selected):
        report_and_refresh(set_review_status(store, selected, "rejected", user.email, versions), "Rejected")
    if regenerate.button(f"Regenerate summary ({len(selected)})", disabled=not selected):
        with st.spinner("Writing new summaries…"):
            report = regenerate_summaries(store, runtime.stages.summarizer, selected, user.email)
        report_and_refresh(report, "Regenerated")


def render_item(items) -> None:
    """One item: photo, a summary editor with a live word count, and the edit history."""
    st.subheader("One item")
    by_id = {item.id: item for item in items}
    item_id = st.selectbox("Item", list(by_id), format_func=lambda i: item_label(by_id[i]), key="detail-item")
    item = by_id[item_id]
    photo, fields = st.columns([1, 2])
    photo_url = runtime.stages.images.photo_url(item.image_path)
    if photo_url:
        photo.image(photo_url, width=240)
    if item.status == "error":
        fields.error(say("Could not be tagged: {error}", error=item.error))
    opened = st.session_state.setdefault(f"opened-{item.id}", item.version)  # the editor keeps what was typed
    shown = st.session_state.setdefault(f"shown-{item.id}", {item.id: item.version})  # version a save is checked against
    text = fields.text_area("Summary", value=item.summary or "", key=f"summary-{item.id}-{opened}")
    words = count_words(text)
    fields.caption(f"{words} / {MAX_SUMMARY_WORDS} words" + (" — too long, shorten before saving" if words > MAX_SUMMARY_WORDS else ""))
    if fields.button("Save summary", key=f"save-summary-{item.id}", disabled=item.status != "ok"):
        report = save_changes(store, {item.id: {"Summary": text}}, schema, user.email, shown)
        if report.ok:  # reopen on the stored text
            st.session_state.pop(f"opened-{item.id}", None)
            st.session_state.pop(f"shown-{item.id}", None)
        report_and_refresh(report, "Saved")
    history = store.edits(item.id)
    if history:
        st.dataframe([{"When (UTC)": e.at, "Who": e.who, "Field": e.field, "Before": e.old, "After": e.new} for e in history],
                     hide_index=True, width="stretch")
    else:
        st.caption("No edits yet.")


st.title("Review")
show_flash()
batch_id = choose_batch(store, lambda b: f"{b.name} (#{b.id}, {b.total} items)", "No batches yet: tag some photos first.")
if batch_id is not None:
    items = store.list_items(batch_id)
    if items:
        render_grid(batch_id, items)
        st.divider()
        render_item(items)
