"""Review: judge each caption against its photo; edit, approve or reject in the grid or one item at a time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.components import cached_thumbnail, choose_batch
from dashboard.runtime import current_user, get_runtime
from dashboard.text import inert, say
from pipeline.batches.review import language_column
from pipeline.batches.review import SEO_COLUMNS, seo_problems
from pipeline.batches.review import avoided_words, batch_summary_languages, current_style_guide, style_problems
from pipeline.wordlimit import SEO_LIMITS
from pipeline.wordlimit import limit_text, measure, within_limit
from pipeline.batches.review import (
    REVIEW_STATES, SaveReport, attributes_to_review, filter_items, grid_rows, guess_note, item_label, missing_required, photo_warnings, real_changes,
    regenerate_summaries, review_item, review_state, save_changes, set_review_status, summary_word_problems,
)
from pipeline.admin.taxonomy import active_taxonomy
from pipeline.models import ItemRecord
from pipeline.wordlimit import MAX_SUMMARY_WORDS, MAX_TITLE_CHARACTERS, count_words

runtime = get_runtime()
user = current_user(runtime)
store = runtime.stages.store
schema = active_taxonomy(store, runtime.stages.base_schema or runtime.stages.schema)[1]  # filters/fields: the active taxonomy
EDITABLE = ["Select", "Status", "Title", "Caption", "Summary", "Tags", *schema.names()]
EDITABLE += list(SEO_COLUMNS)  # SEO title, meta description, alt text (issue 19): shown under "All columns" only
# Shown by default: photo, caption, attributes and summary fit a 1366 px screen with the sidebar open
# (about 890 px of content in the wide layout). Pixel widths add up to that; long text wraps in the
# taller rows (Streamlit wraps cell text when row_height is over 4rem) and opens in full on double-click.
COMPACT = {"Select": 40, "Photo": 72, "Item": 100, "Status": 96, "Caption": 180, "Attributes": 130, "Summary": 200, "Notes": 72}
ROW_HEIGHT = 72
FIELDS = ["Title", "Caption", "Summary", "Tags", *schema.names()]  # the one-item view's editable fields
guide = current_style_guide(store)  # words to avoid: a person's edit using one is saved with a warning and flagged


PAGE_SIZE = runtime.settings.results_page_size  # grid rows per page: only those rows' thumbnails are made and sent
THUMBNAIL_TTL_S = max(1, min(300, runtime.settings.presign_expiry_s // 2))


def thumbnail(location: str | None) -> str | None:
    """The image store's thumbnail URL (a data: URI decoded once per photo, or a presigned URL reused
    for well under its lifetime)."""
    return cached_thumbnail(runtime.stages.images, location, THUMBNAIL_TTL_S)


def bump_grid() -> None:
    """A new editor key: the grid drops its edited cells and shows the store's values."""
    st.session_state["grid_version"] = st.session_state.get("grid_version", 0) + 1
    st.session_state.pop("grid-shown", None)  # that grid is gone, and its cells with it


def show_flash() -> None:
    """Messages from the previous run (every save reruns the page so the grid shows stored values)."""
    for kind, body in st.session_state.pop("flash", []):
        if kind == "kept":
            st.caption("Not saved: the values you typed, to copy back in if you still want them. "
                       "The grid and the item view now show what is stored.")
            st.dataframe(body, hide_index=True, width="stretch")
        else:
            getattr(st, kind)(body)


def flash_for(report: SaveReport, done: str, not_done: str | None = None) -> list[tuple[str, Any]]:
    """`not_done`: what was asked and did not happen though some changes saved ("not approved"), said with them."""
    saved = f"{done}: {len(report.saved)} change{'s' * (len(report.saved) != 1)} saved"
    flash: list[tuple[str, Any]] = [("success", saved + (f"; {not_done} (see below)." if not_done else "."))] if report.saved else []
    flash += [("error", inert(message)) for message in report.refused]  # they name the item (SKU / file name)
    flash += [("warning", inert(message)) for message in report.warnings]  # saved, with a word to avoid (issue 19)
    if report.kept:
        flash.append(("kept", report.kept))
    return flash or [("info", "Nothing changed.")]


def report_and_refresh(report: SaveReport, done: str) -> None:
    """Saved edits are already in the store when this runs. Whether or not some were refused, the grid
    is re-keyed so it shows the store's current values (refused values are listed with the messages)."""
    st.session_state["flash"] = flash_for(report, done)
    bump_grid()
    st.rerun()


def grid_has_edits() -> bool:
    """Cells typed in the grid shown by the previous run and not saved yet (ticking Select is not an edit).
    While there are, whatever would replace that grid (another filter, page or batch) or re-key it (a save
    in the one-item view) waits: those edits would be dropped without a word."""
    key = st.session_state.get("grid-shown")
    edited_rows = st.session_state[key].get("edited_rows", {}) if key and key in st.session_state else {}
    return any(set(columns) - {"Select"} for columns in edited_rows.values())


def pending_changes(key: str, frame: pd.DataFrame) -> dict[int, dict]:
    """Edited cells that would save something, by item id (ticking Select is not a change)."""
    edited_rows = st.session_state.get(key, {}).get("edited_rows", {})
    return real_changes({int(frame.index[int(row)]): columns for row, columns in edited_rows.items()}, schema)


def render_filters(locked: bool) -> tuple[list[str], bool, bool, bool, bool, bool]:
    # two rows: the four "only items with…" checkboxes keep their labels whole at 1366 px (one row of six cut them off)
    status, wide = st.columns([4, 1], vertical_alignment="bottom")
    low, required, avoid, photo = st.columns(4, vertical_alignment="bottom")
    states = status.multiselect("Status", list(REVIEW_STATES), default=list(REVIEW_STATES), format_func=REVIEW_STATES.get,
                                key="filter-status", disabled=locked)
    low_confidence = low.checkbox("Attributes to check", key="filter-low", disabled=locked,
                                  help="Only items with an answer outside the attribute's list (marked ? in Attributes) "
                                  "or one the summary model guessed (marked guessed by)")
    missing = required.checkbox("Required missing", key="filter-required", disabled=locked,
                                help="Only items whose category needs an attribute that has no allowed value yet (they cannot be approved)")
    avoided = avoid.checkbox("Words to avoid", key="filter-avoided", disabled=locked or guide is None,
                             help="Only items whose title, summary, tags or SEO fields use one of the style guide's words to avoid"
                                  if guide is not None else "The style guide lists no words to avoid (Admin, Brand)")
    photo_problems = photo.checkbox("Photo warnings", key="filter-photo", disabled=locked, help="Only items whose photo looks blurry, dark, small…")
    all_columns = wide.toggle("All columns", key="grid-all-columns", disabled=locked,
                              help="Title, tags and each attribute in its own column (scrolls sideways)")
    return states, low_confidence, photo_problems, all_columns, missing, avoided and guide is not None


def grid_key(batch_id: int, view: tuple, page: int) -> str:
    """`grid-<batch>-<version>`; a filtered or widened view or another page gets its own editor (row positions differ)."""
    key = f"grid-{batch_id}-{st.session_state.get('grid_version', 0)}"
    states, low_confidence, photo_problems, all_columns, missing, avoided = view
    if not (set(states) == set(REVIEW_STATES) and not (low_confidence or photo_problems or all_columns or missing or avoided)):
        key += f"-{'+'.join(sorted(states))}-{int(low_confidence)}{int(photo_problems)}{int(all_columns)}{int(missing)}{int(avoided)}"
    return key if page == 1 else f"{key}-p{page}"


def notes(item: ItemRecord) -> str:
    """The compact grid's Notes cell: why it failed, else what stops or deserves a look before approving."""
    if item.status == "error":
        return "failed: " + (item.error or "")
    missing = missing_required(item, schema)
    avoided = avoided_words(item, guide)
    return "; ".join([*(["required: " + ", ".join(missing)] if missing else []),
                      *(["words to avoid: " + "; ".join(avoided)] if avoided else []), *photo_warnings(item)])


def render_grid(batch_id: int, items: list[ItemRecord], key: str, all_columns: bool, languages: list[str]) -> int:
    """The grid and its buttons; returns how many items have unsaved edits in it. `languages`: the batch's extra
    summary languages, a "Summary (de)" column each under All columns (the compact view keeps its 1366 px fit)."""
    frame = pd.DataFrame(grid_rows(items, schema, thumbnail, guide, languages)).set_index("id")
    language_columns = [language_column(code) for code in languages]
    frame["Notes"] = [notes(item) for item in items]
    versions = st.session_state.setdefault(f"{key}-versions", {item.id: item.version for item in items})  # as first shown
    if all_columns:
        order = ["Select", "Photo", "Item", "Result", "Status", "Title", "Caption", *schema.names(), "Required", "Summary", *language_columns, "Words", "Tags", "Words to avoid", "Warnings"]
        order += list(SEO_COLUMNS)  # issue 19: last, so the default (compact) view keeps photo/caption/attributes/summary
    else:
        order = list(COMPACT)
    config: dict[str, Any] = {
        "Select": st.column_config.CheckboxColumn("Select", width=40),
        "Photo": st.column_config.ImageColumn("Photo", width=72, help="Double-click to enlarge; the one-item view below shows it large"),
        "Item": st.column_config.TextColumn("Item", width=100),
        "Status": st.column_config.SelectboxColumn("Status", options=["pending", "approved", "rejected"], required=True, width=96),
        "Caption": st.column_config.TextColumn("Caption", width=180),
        "Attributes": st.column_config.TextColumn("Attributes", width=130, help=" · ".join(schema.names()) + " (? = not in the list: check it; guessed by a model: check it)"),
        "Summary": st.column_config.TextColumn("Summary", width=200, help=f"At most {MAX_SUMMARY_WORDS} words"),
        "Title": st.column_config.TextColumn("Title", help=f"At most {MAX_TITLE_CHARACTERS} characters"),
        "Notes": st.column_config.TextColumn("Notes", width=72, help="Required attributes still missing, photo-check warnings, or why the item failed"),
        "Required": st.column_config.TextColumn("Required", help="Attributes this item's category needs before it can be approved"),
        "Words to avoid": st.column_config.TextColumn("Words to avoid", help="The style guide's words to avoid in this item's text"),
        "Words": st.column_config.NumberColumn("Words", help="Word count of the saved summary"),
    }
    config.update({column: st.column_config.TextColumn(column, width=160, help=f"At most {SEO_LIMITS[name]} characters"
                                                       + ("; what the photo shows, no marketing" if name == "alt_text" else ""))
                   for column, name in SEO_COLUMNS.items()})
    config.update({column: st.column_config.TextColumn(column, width=200, help=f"At most {limit_text(code)}")
                   for code, column in zip(languages, language_columns)})
    st.data_editor(
        frame, key=key, hide_index=True, width="stretch", column_order=order, row_height=ROW_HEIGHT,
        disabled=[column for column in frame.columns if column not in EDITABLE + language_columns], column_config=config,
    )
    if languages and not all_columns:
        st.caption(f"This batch also has summaries in {', '.join(languages)}: turn on All columns to see and edit them here.")
    st.session_state["grid-shown"] = key
    edited_rows = st.session_state.get(key, {}).get("edited_rows", {})
    selected = [int(frame.index[int(row)]) for row, columns in edited_rows.items() if columns.get("Select")]
    changes = pending_changes(key, frame)
    labels = {item.id: item_label(item) for item in items}
    for problem in summary_word_problems(changes, labels):
        st.warning(inert(problem) + " It will not be saved until it is shorter.")
    for problem in seo_problems(changes, labels):  # SEO limits / alt text's marketing words (issue 19)
        st.warning(inert(problem))
    for problem in style_problems(changes, labels, guide):  # words to avoid: saved anyway, the item flagged (issue 19)
        st.warning(inert(problem) + " It will be saved, and the item flagged until it is rewritten.")

    if changes:
        st.caption(f"Unsaved edits in {len(changes)} item{'s' * (len(changes) != 1)}: filters, pages and the one-item view's "
                   "buttons wait until you save or discard them.")
    save, approve, reject, regenerate, discard = st.columns(5)
    if save.button("Save changes", type="primary", disabled=not changes, key="grid-save",
                   help=None if changes else "Nothing to save: edit a cell first (ticking Select is not a change)"):
        report_and_refresh(save_changes(store, changes, schema, user.email, versions), "Saved")
    if approve.button(f"Approve selected ({len(selected)})", disabled=not selected):
        report_and_refresh(set_review_status(store, selected, "approved", user.email, versions, schema), "Approved")
    if reject.button(f"Reject selected ({len(selected)})", disabled=not selected):
        report_and_refresh(set_review_status(store, selected, "rejected", user.email, versions), "Rejected")
    if regenerate.button(f"Regenerate summary ({len(selected)})", disabled=not selected):
        with st.spinner("Writing new summaries…"):
            report = regenerate_summaries(store, runtime.stages.summarizer, selected, user.email)
        report_and_refresh(report, "Regenerated")
    discard.button("Discard edits", key="grid-discard", disabled=not changes, on_click=bump_grid,
                   help="Drop the cells typed in the grid and show the stored values")
    return len(changes)


# One item at a time --------------------------------------------------------------------------
def field_key(item: ItemRecord, column: str) -> str:
    opened = st.session_state.setdefault(f"opened-{item.id}", item.version)  # the fields keep what was typed until saved
    return f"focus-{item.id}-{opened}-{st.session_state.get(f'discarded-{item.id}', 0)}-{column}"


def shown_values(item: ItemRecord) -> dict[str, str]:
    values = {"Title": item.title or "", "Caption": item.caption or "", "Summary": item.summary or "", "Tags": ", ".join(item.tags)}
    for name in schema.names():
        attribute = item.attribute(name)
        values[name] = attribute.value if attribute else ""
    values.update({language_column(code): text for code, text in item.summaries.items()})  # extra languages (issue 19)
    values.update({column: getattr(item, name) or "" for column, name in SEO_COLUMNS.items()})  # SEO fields (issue 19)
    return values


def typed_changes(item_id: int, shown: dict[str, str]) -> dict[str, str]:
    """The one-item view's fields that differ from what it showed (read in callbacks, before the page runs)."""
    prefix = f"focus-{item_id}-{st.session_state.get(f'opened-{item_id}')}-{st.session_state.get(f'discarded-{item_id}', 0)}"
    typed = {column: st.session_state.get(f"{prefix}-{column}", value)
             for column, value in shown.items()}
    return {column: value for column, value in typed.items() if (value or "") != (shown[column] or "")}


def unsaved_here() -> bool:
    """The item on screen has typed, unsaved fields; if so, say so in the one-item view and stay."""
    item_id, shown = st.session_state.get("focus-shown", (None, {}))
    if item_id is None or not typed_changes(item_id, shown):
        return False
    st.session_state["focus-held"] = item_id
    return True


def act(item_id: int, shown: dict[str, str], status: str | None, move_to: int | None) -> None:
    """Button callback (runs before the page): save the typed fields, then approve/reject, then move on."""
    changes = typed_changes(item_id, shown)
    versions = st.session_state.setdefault(f"shown-{item_id}", {})
    versions.setdefault(item_id, st.session_state.get(f"opened-{item_id}"))
    report = review_item(store, item_id, changes, status, schema, user.email, versions)
    # Approved / Rejected only when it happened: a refused field leaves the status alone, a refused approval refuses it
    done = {"approved": "Approved", "rejected": "Rejected"}.get(status or "", "Saved") if report.ok else "Saved"
    not_done = f"not {status}" if status is not None and not report.ok else None
    st.session_state["flash"] = flash_for(report, done, not_done)
    if report.saved or report.ok:
        # The grid keeps its key (re-keying made the browser build it again: most of a save's time). It holds no
        # typed cells (saving here waits until they are saved or discarded) and shows the stored values on this
        # rerun; only its record of the version shown moves on, so a later grid edit of this item is not refused.
        grid_versions = st.session_state.get(f"{st.session_state.get('grid-shown')}-versions")
        saved = store.get_item(item_id)
        if grid_versions is not None and item_id in grid_versions and saved is not None:
            grid_versions[item_id] = saved.version
    if report.ok:
        st.session_state.pop(f"opened-{item_id}", None)  # reopen on the stored values
        st.session_state.pop(f"shown-{item_id}", None)
        if move_to is not None:
            st.session_state["focus-item"] = move_to


def go(item_id: int) -> None:
    """Previous / Next: not while the fields hold unsaved typing (they would be dropped with the item)."""
    if not unsaved_here():
        st.session_state["focus-item"] = item_id


def picked_item() -> None:
    """The item picker changed: back to the item on screen if its fields hold unsaved typing."""
    held, _ = st.session_state.get("focus-shown", (None, {}))
    if unsaved_here():
        st.session_state["focus-item"] = held


def discard_typed(item_id: int) -> None:
    st.session_state[f"discarded-{item_id}"] = st.session_state.get(f"discarded-{item_id}", 0) + 1  # new field keys: stored values
    st.session_state.pop("focus-held", None)


def render_focus(items: list[ItemRecord], grid_edits: int) -> None:
    """Large photo, the editable fields, Approve / Reject / Previous / Next (keyboard: A, X, P, N; S saves).
    While the grid above holds unsaved edits (`grid_edits` items), saving here waits: it refreshes the grid."""
    st.subheader("One at a time")
    ids = [item.id for item in items]
    by_id = {item.id: item for item in items}
    if st.session_state.get("focus-item") not in by_id:
        st.session_state["focus-item"] = ids[0]
    item_id = st.selectbox("Item", ids, format_func=lambda i: item_label(by_id[i]), key="focus-item", on_change=picked_item)
    item = by_id[item_id]
    position = ids.index(item_id)
    before = ids[position - 1] if position > 0 else None
    after = ids[position + 1] if position + 1 < len(ids) else None
    next_after_review = after if after is not None else before  # where Approve / Reject lead (the item may leave the filter)
    st.caption(f"{position + 1} of {len(ids)} · {REVIEW_STATES[review_state(item)]}" + (f" by {inert(item.updated_by)}" if item.review_status != "pending" and item.updated_by else "")
               + " · keys: A approve, X reject, N next, P previous, S save (outside text fields)")
    if item.status == "ok":
        st.caption(f"Tagged with attribute taxonomy version {item.taxonomy_version}" + (" (the default)" if item.taxonomy_version == 0 else ""))

    photo, fields = st.columns([2, 3])
    photo_url = runtime.stages.images.photo_url(item.image_path)
    if photo_url:
        photo.image(photo_url, width="stretch")
    else:
        photo.caption("No photo stored for this item.")
    for warning in photo_warnings(item):
        photo.warning(inert(f"Photo: {warning}"), icon=":material/photo_camera:")
    if item.status == "error":
        fields.error(say("Could not be tagged: {error}", error=item.error))
    missing = missing_required(item, schema)
    if missing:  # approving is refused until they are set (pipeline/batches/review.py)
        fields.warning(inert("Required before approval: " + ", ".join(missing) + "."), icon=":material/rule:")
    avoided = avoided_words(item, guide)
    if avoided:  # a person's edit kept a word to avoid (saved with a warning)
        fields.warning(inert("Uses the style guide's words to avoid: " + "; ".join(avoided) + "."), icon=":material/flag:")

    if grid_edits:
        st.warning(f"The grid above has unsaved edits in {grid_edits} item{'s' * (grid_edits != 1)}. Save them there (Save changes) "
                   "or discard them (Discard edits) before saving, approving or rejecting here: that refreshes the grid.",
                   icon=":material/edit_note:")
    shown = shown_values(item)
    st.session_state["focus-shown"] = (item.id, shown)
    editable = item.status == "ok"
    title = fields.text_input("Title", value=shown["Title"], key=field_key(item, "Title"), disabled=not editable,
                              help=f"At most {MAX_TITLE_CHARACTERS} characters")
    if len((title or "").strip()) > MAX_TITLE_CHARACTERS:  # refused on save, as in the grid
        fields.caption(f"{len((title or '').strip())} / {MAX_TITLE_CHARACTERS} characters — too long, shorten before saving")
    fields.text_area("Caption", value=shown["Caption"], key=field_key(item, "Caption"), height=80, disabled=not editable)
    flagged = set(attributes_to_review(item))
    columns = fields.columns(max(1, min(3, len(schema.names()))))
    for index, name in enumerate(schema.names()):
        options = list(schema.spec(name).vocabulary)
        if shown[name] and shown[name] not in options:
            options.insert(0, shown[name])
        columns[index % len(columns)].selectbox(
            name + (inert(guess_note(item.attribute(name))) or (" (check: not in the list)" if name in flagged else "")), options, index=options.index(shown[name]) if shown[name] else None,
            key=field_key(item, name), accept_new_options=True, disabled=not editable, placeholder="(none)",
        )
    text = fields.text_area("Summary", value=shown["Summary"], key=field_key(item, "Summary"), disabled=not editable)
    words = count_words(text or "")
    fields.caption(f"{words} / {MAX_SUMMARY_WORDS} words" + (" — too long, shorten before saving" if words > MAX_SUMMARY_WORDS else ""))
    for code in item.summaries:  # extra-language summaries (issue 19): saved with the same version check
        column = language_column(code)
        other = fields.text_area(column, value=shown[column], key=field_key(item, column), disabled=not editable)
        fields.caption(f"{measure(other or '', code)} / {limit_text(code)}"
                       + ("" if within_limit(other or "", code) else " — too long, shorten before saving"))
    fields.text_input("Tags", value=shown["Tags"], key=field_key(item, "Tags"), disabled=not editable, help="Comma-separated")
    for column, name in SEO_COLUMNS.items():  # SEO and accessibility (issue 19): a counter each; over the limit is refused on save
        typed_text = fields.text_input(column, value=shown[column], key=field_key(item, column), disabled=not editable,
                                       help="What the photo shows, for someone who cannot see it; no marketing, prices or calls to action"
                                       if name == "alt_text" else None)
        size, limit = len(" ".join((typed_text or "").split())), SEO_LIMITS[name]
        fields.caption(f"{size} / {limit} characters" + (" — too long, shorten before saving" if size > limit else ""))

    typed = typed_changes(item.id, shown)
    for problem in style_problems({item.id: typed}, {item.id: item_label(item)}, guide):  # as the grid warns (issue 19)
        st.warning(inert(problem) + " It will be saved, and the item flagged until it is rewritten.", icon=":material/flag:")
    if st.session_state.get("focus-held") == item.id and typed:
        st.warning("This item has unsaved changes: Save them, or Discard them, before moving to another item.", icon=":material/edit_note:")
    elif st.session_state.get("focus-held") is not None:
        st.session_state.pop("focus-held")
    buttons = st.columns(6)
    buttons[0].button("Approve", type="primary", shortcut="A", key="focus-approve", disabled=not editable or bool(grid_edits),
                      on_click=act, args=(item.id, shown, "approved", next_after_review), help="Save the fields and approve, then go to the next item")
    buttons[1].button("Reject", shortcut="X", key="focus-reject", disabled=item.status == "pending" or bool(grid_edits),
                      on_click=act, args=(item.id, shown, "rejected", next_after_review))
    buttons[2].button("Save", shortcut="S", key="focus-save", disabled=not editable or bool(grid_edits), on_click=act, args=(item.id, shown, None, None))
    buttons[3].button("Previous", shortcut="P", key="focus-previous", disabled=before is None, on_click=go, args=(before,))
    buttons[4].button("Next", shortcut="N", key="focus-next", disabled=after is None, on_click=go, args=(after,))
    buttons[5].button("Discard", key="focus-discard", disabled=not typed, on_click=discard_typed, args=(item.id,),
                      help="Drop what was typed in these fields and show the stored values")

    with st.expander("Edit history", expanded=False):
        history = store.edits(item.id)
        if history:
            st.dataframe([{"When (UTC)": e.at, "Who": e.who, "Field": e.field, "Before": e.old, "After": e.new} for e in history],
                         hide_index=True, width="stretch")
        else:
            st.caption("No edits yet.")


st.title("Review")
show_flash()
locked = grid_has_edits()  # the grid on screen holds typed cells: keep that grid (and its batch) until saved or discarded
batch_id = choose_batch(store, lambda b: f"{b.name} (#{b.id}, {b.total} items)", "No batches yet: tag some photos first.", locked=locked)
if batch_id is not None:
    every = store.list_items(batch_id)
    if every:
        states, low_confidence, photo_problems, all_columns, missing, avoided = render_filters(locked)
        items = filter_items(every, states, low_confidence=low_confidence, photo_problems=photo_problems, missing=missing, schema=schema,
                             avoided=avoided, guide=guide)
        if not items:
            st.info(f"No items match these filters (the batch has {len(every)}).")
        else:
            if len(items) != len(every):
                st.caption(f"Showing {len(items)} of {len(every)} items.")
            view = (tuple(states), low_confidence, photo_problems, all_columns, missing, avoided)
            pages = max(1, -(-len(items) // PAGE_SIZE))
            if st.session_state.get("grid-page", 1) > pages:
                st.session_state["grid-page"] = pages  # fewer pages after a filter or an approval
            page = st.number_input(f"Page (of {pages}, {PAGE_SIZE} rows each)", 1, pages, 1, key="grid-page", disabled=locked) if pages > 1 else 1
            page = min(int(page), pages)
            shown_rows = items[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
            languages = batch_summary_languages(store, batch_id, every)  # extra summary languages (issue 19)
            grid_edits = render_grid(batch_id, shown_rows, grid_key(batch_id, view, page), all_columns, languages)
            st.divider()
            render_focus(items, grid_edits)
