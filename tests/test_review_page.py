"""The Review page through AppTest, on a store filled with finished items (no model run): the photo in
every row, the one-item view, filters, and the grid after a partly refused save or approve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.text import shown
from support.images import jpeg_bytes

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
NAMES = ("category", "color", "material", "pattern", "style")


@pytest.fixture
def review_env(monkeypatch, tmp_path):
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "SUMMARIZER": "offline", "AUTH_MODE": "dev"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


def result(index: int, photo: Path, *, blurry: bool = False, odd_color: bool = False):
    from pipeline.models import AttributeValue, CaptionResult, ItemResult, PhotoChecks, SummaryResult

    checks = PhotoChecks(800, 600, False, 40.0 if blurry else 400.0, blurry, 180.0, False, False, True, True, ["red"])
    attributes = [AttributeValue(name, "red", "red", True) for name in NAMES]
    if odd_color:
        attributes[1] = AttributeValue("color", "maroonish", "maroonish", False)
    return ItemResult(
        content_key=f"{index:064x}", image_path=str(photo), checks=checks, word_count=6,
        caption=CaptionResult(caption=f"caption {index}", answers={}, model_id="test"), attributes=attributes,
        summary=SummaryResult(summary=f"Summary number {index} of a shirt.", title=f"Shirt {index}", tags=["shirt"],
                              attributes={}, model="offline", offline=True),
    )


@pytest.fixture
def batch(review_env):
    """Five items: 0 plain, 1 blurry photo, 2 colour outside the vocabulary, 3 approved, 4 failed."""
    from pipeline.models import IngestReport, SourceItem, SourceRef
    from pipeline.settings import Settings
    from pipeline.store.sqlite_store import SqliteStore

    settings = Settings()
    store = SqliteStore(settings.db_path)
    sources = [SourceItem(source=f"shirt-{i}.jpg", ref=SourceRef("file", f"/nowhere/{i}.jpg"), sku=f"SKU-{i}") for i in range(5)]
    record = store.create_batch("review", "test", IngestReport(items=sources))
    items = store.list_items(record.id)
    for index, item in enumerate(items[:4]):
        photo = review_env / f"photo-{index}.jpg"
        photo.write_bytes(jpeg_bytes(color=(40 * index, 100, 200), seed=index))
        store.save_result(item.id, result(index, photo, blurry=index == 1, odd_color=index == 2), [])
    store.save_error(items[4].id, "Could not read the image.", [])
    store.edit_item(items[3].id, "review_status", "approved", "someone")
    return store, record.id, store.list_items(record.id)


def review_page() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("pages/review.py").run()
    assert not app.exception, app.exception
    return app


def grid(app: AppTest):
    return app.data_editor[0]


def button(app: AppTest, label: str):
    [found] = [b for b in app.button if b.label == label]
    return found


def edit_grid(app: AppTest, key: str, edited_rows: dict) -> None:
    app.session_state[key] = {"edited_rows": edited_rows, "added_rows": [], "deleted_rows": []}
    app.run()
    assert not app.exception, app.exception


def test_every_row_has_a_thumbnail_and_the_text_fits_without_scrolling(batch):
    store, batch_id, items = batch
    app = review_page()
    editor = grid(app)
    config = json.loads(editor.proto.columns)
    assert config["Photo"]["type_config"]["type"] == "image"
    photos = editor.value["Photo"]
    assert photos.iloc[:4].str.startswith("data:image/jpeg;base64,").all() and len(photos.iloc[0]) > 100
    assert not isinstance(photos.iloc[4], str)  # the failed item has no stored photo (None)
    order = list(editor.proto.column_order)
    assert order[:2] == ["Select", "Photo"] and {"Caption", "Attributes", "Summary"} <= set(order)
    assert sum(config[column]["width"] for column in order) <= 900  # 1366 px, sidebar open, wide layout
    assert editor.proto.row_height > 64  # over 4rem: Streamlit wraps the cell text
    assert editor.value["Attributes"].iloc[2] == "red · maroonish? · red · red · red"  # ? = not in the vocabulary


def test_filters_narrow_the_rows(batch):
    store, batch_id, items = batch
    app = review_page()
    assert len(grid(app).value) == 5
    app.multiselect(key="filter-status").set_value(["failed"]).run()
    assert list(grid(app).value["Item"]) == ["#5 SKU-4"]
    app.multiselect(key="filter-status").set_value(["pending", "approved", "rejected", "failed"]).run()
    app.checkbox(key="filter-low").check().run()
    assert list(grid(app).value["Item"]) == ["#3 SKU-2"]
    app.checkbox(key="filter-low").uncheck().run()
    app.checkbox(key="filter-photo").check().run()
    assert list(grid(app).value["Item"]) == ["#2 SKU-1"]
    assert any("Showing 1 of 5 items." in c.value for c in app.caption)
    app.checkbox(key="filter-photo").uncheck().run()
    app.multiselect(key="filter-status").set_value(["approved"]).run()
    assert list(grid(app).value["Item"]) == ["#4 SKU-3"]
    assert not app.exception, app.exception


def test_one_item_view_saves_approves_and_moves_to_the_next_item(batch):
    store, batch_id, items = batch
    app = review_page()
    assert app.selectbox(key="focus-item").value == items[0].id
    assert app.image and app.image[0].value[0], "the one-item view shows the photo"
    [caption] = [t for t in app.text_area if t.label == "Caption"]
    caption.set_value("a red shirt, checked against the photo").run()
    button(app, "Approve").click().run()
    assert not app.exception, app.exception
    first = store.get_item(items[0].id)
    assert first.review_status == "approved" and first.caption == "a red shirt, checked against the photo"
    assert app.selectbox(key="focus-item").value == items[1].id  # moved on
    assert button(app, "Approve").proto.shortcut  # keyboard shortcut sent to the browser
    assert grid(app).value["Status"].iloc[0] == "approved"  # the grid shows it too
    button(app, "Reject").click().run()
    assert store.get_item(items[1].id).review_status == "rejected"
    assert app.selectbox(key="focus-item").value == items[2].id
    button(app, "Previous").click().run()
    assert app.selectbox(key="focus-item").value == items[1].id

    # Pending review only: the one item left; approved, it leaves the list.
    app.multiselect(key="filter-status").set_value(["pending"]).run()
    assert list(grid(app).value["Item"]) == ["#3 SKU-2"] and app.selectbox(key="focus-item").value == items[2].id
    button(app, "Approve").click().run()
    assert store.get_item(items[2].id).review_status == "approved"
    assert any("No items match these filters" in i.value for i in app.info)

    # A failed item cannot be approved from the one-item view.
    app.multiselect(key="filter-status").set_value(["failed"]).run()
    assert app.selectbox(key="focus-item").value == items[4].id and button(app, "Approve").disabled


def test_selecting_rows_is_not_a_change(batch):
    store, batch_id, items = batch
    app = review_page()
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Select": True}, 1: {"Select": True}})
    assert button(app, "Save changes").disabled  # no false "Nothing changed" after a click
    assert not button(app, "Approve selected (2)").disabled
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Select": True, "Caption": "edited"}})
    button(app, "Save changes").click().run()
    assert any("Saved: 1 change saved." in s.value for s in app.success)
    assert not any("Nothing changed" in i.value for i in app.info)


def test_a_partly_refused_save_leaves_the_grid_showing_the_stored_values(batch):
    store, batch_id, items = batch
    app = review_page()
    key = f"grid-{batch_id}-0"
    edit_grid(app, key, {0: {"Summary": "Mine, saved."}, 1: {"Summary": "Mine, refused."}})
    store.edit_item(items[1].id, "summary", "Theirs, saved first.", "colleague@example.com")  # after the page showed it
    button(app, "Save changes").click().run()
    assert not app.exception, app.exception
    assert any("changed by colleague" in shown(e.value) for e in app.error)
    summaries = list(grid(app).value["Summary"])
    assert summaries[:2] == ["Mine, saved.", "Theirs, saved first."]  # the store's values, not the typed one
    assert grid(app).value["Summary"].tolist() == [store.get_item(i.id).summary or "" for i in items]
    assert app.session_state["grid_version"] == 1  # the editor was re-keyed
    kept = [d.value for d in app.dataframe if "Your value" in d.value.columns]
    assert kept and kept[0]["Your value"].tolist() == ["Mine, refused."]  # nothing typed is lost
    assert button(app, "Save changes").disabled  # a fresh editor: nothing pending


def test_a_partly_refused_approve_clears_the_selection_and_shows_the_stored_status(batch):
    store, batch_id, items = batch
    app = review_page()
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Select": True}, 4: {"Select": True}})  # a tagged item and the failed one
    button(app, "Approve selected (2)").click().run()
    assert not app.exception, app.exception
    assert any("failed items cannot be approved" in shown(e.value) for e in app.error)
    assert any("Approved: 1 change saved." in s.value for s in app.success)
    value = grid(app).value
    assert value["Status"].iloc[0] == "approved" and not value["Select"].any()
    assert button(app, "Approve selected (0)").disabled


def caption_field(app: AppTest):
    [caption] = [t for t in app.text_area if t.label == "Caption"]
    return caption


def test_unsaved_grid_edits_are_not_dropped_by_the_one_item_view_filters_or_pages(batch):
    """Issue 16: a Save / Approve / Reject in the one-item view re-keyed the grid, and a filter change gave it
    another key: cells typed in the grid and not saved were dropped without a word. Now those wait (with the
    reason on screen) until the grid edits are saved or discarded; moving between items keeps them."""
    store, batch_id, items = batch
    app = review_page()
    key = f"grid-{batch_id}-0"
    edit_grid(app, key, {1: {"Summary": "Typed in the grid, not saved yet."}})
    assert any("The grid above has unsaved edits in 1 item." in w.value for w in app.warning)
    assert all(button(app, label).disabled for label in ("Approve", "Reject", "Save"))
    assert app.multiselect(key="filter-status").disabled and app.checkbox(key="filter-low").disabled
    assert app.checkbox(key="filter-photo").disabled and app.toggle(key="grid-all-columns").disabled
    assert app.selectbox(key="batch-picker").disabled  # another batch would replace the grid and drop the typed cell
    button(app, "Next").click().run()  # going through items does not touch the grid
    assert app.selectbox(key="focus-item").value == items[1].id
    assert not button(app, "Save changes").disabled  # the typed cell is still there to save
    button(app, "Save changes").click().run()
    assert store.get_item(items[1].id).summary == "Typed in the grid, not saved yet."
    assert not button(app, "Approve").disabled and not app.checkbox(key="filter-low").disabled
    assert not app.selectbox(key="batch-picker").disabled

    edit_grid(app, f"grid-{batch_id}-1", {0: {"Caption": "Second thoughts."}})
    assert button(app, "Approve").disabled
    button(app, "Discard edits").click().run()  # dropped on purpose: the stored values show again
    assert not app.exception, app.exception
    assert store.get_item(items[0].id).caption == "caption 0" and grid(app).value["Caption"].iloc[0] == "caption 0"
    assert not button(app, "Approve").disabled and button(app, "Save changes").disabled


def test_moving_to_another_item_does_not_drop_what_was_typed_in_the_one_item_view(batch):
    """Next / Previous / the item list left the typed fields behind (Streamlit forgets a widget not drawn),
    so coming back showed the stored text. Now the view stays on the item and says why, until Save or Discard."""
    store, batch_id, items = batch
    app = review_page()
    caption_field(app).set_value("typed, not saved").run()
    button(app, "Next").click().run()
    assert app.selectbox(key="focus-item").value == items[0].id
    assert any("This item has unsaved changes" in w.value for w in app.warning)
    assert caption_field(app).value == "typed, not saved"
    app.selectbox(key="focus-item").set_value(items[2].id).run()  # picked in the list: the same
    assert app.selectbox(key="focus-item").value == items[0].id and caption_field(app).value == "typed, not saved"
    button(app, "Save").click().run()
    assert store.get_item(items[0].id).caption == "typed, not saved"
    button(app, "Next").click().run()
    assert app.selectbox(key="focus-item").value == items[1].id and not any("unsaved changes" in w.value for w in app.warning)

    caption_field(app).set_value("thrown away").run()
    assert not button(app, "Discard").disabled
    button(app, "Discard").click().run()
    assert caption_field(app).value == "caption 1" and store.get_item(items[1].id).caption == "caption 1"
    button(app, "Previous").click().run()
    assert app.selectbox(key="focus-item").value == items[0].id


def test_after_a_save_in_the_one_item_view_the_grid_shows_it_and_still_saves_that_item(batch):
    """A one-item save no longer re-keys the grid (the browser rebuilt it: most of a save's time), so the
    grid must both show the stored value and accept the next edit of the same item (not 'changed by you')."""
    store, batch_id, items = batch
    app = review_page()
    caption_field(app).set_value("saved from the one-item view").run()
    button(app, "Save").click().run()
    assert grid(app).value["Caption"].iloc[0] == "saved from the one-item view"
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Summary": "Then edited in the grid."}})
    button(app, "Save changes").click().run()
    assert not app.error, [e.value for e in app.error]
    assert store.get_item(items[0].id).summary == "Then edited in the grid."


def test_required_attributes_are_flagged_filtered_and_block_approval(batch):
    """Issue 19: an active taxonomy requiring colour flags the item whose colour is outside the list, and Approve refuses
    it with a sentence naming the attribute while the others approve."""
    from pipeline.admin.taxonomy import activate_taxonomy, default_schema_text, save_taxonomy

    store, batch_id, items = batch
    data = json.loads(default_schema_text())
    next(a for a in data["attributes"] if a["name"] == "color")["required"] = True
    save_taxonomy(store, json.dumps(data), "admin", based_on=0)
    activate_taxonomy(store, 1, "admin")
    app = review_page()
    assert "required: color (\"maroonish\" is not an allowed value)" in grid(app).value["Notes"].iloc[2]
    app.checkbox(key="filter-required").check().run()
    assert list(grid(app).value["Item"]) == ["#3 SKU-2"]
    app.checkbox(key="filter-required").uncheck().run()
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Select": True}, 2: {"Select": True}})
    button(app, "Approve selected (2)").click().run()
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [
        '#3 SKU-2: Not approved: the taxonomy requires color ("maroonish" is not an allowed value) for every item. '
        "Set it to one of the allowed values, then approve."]
    assert [store.get_item(i.id).review_status for i in items[:3]] == ["approved", "pending", "pending"]


def test_a_grid_edit_with_a_word_to_avoid_is_saved_with_a_warning_and_flagged(batch):
    from pipeline.admin.brand import clean_style_guide

    store, batch_id, items = batch
    store.save_style_guide(clean_style_guide("", "cheap", ""), "admin", expected_version=0)
    app = review_page()
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Summary": "A cheap red shirt."}})
    assert any("Summary uses 'cheap', from the style guide's words to avoid. It will be saved" in shown(w.value) for w in app.warning)
    button(app, "Save changes").click().run()
    assert not app.exception, app.exception
    assert store.get_item(items[0].id).summary == "A cheap red shirt."  # saved
    assert any("#1 SKU-0: Summary saved, but it uses 'cheap'" in shown(w.value) for w in app.warning)
    assert "words to avoid: Summary: 'cheap'" in grid(app).value["Notes"].iloc[0]


def test_the_words_to_avoid_filter_shows_only_flagged_items(batch):
    """Issue 19 follow-up: beside "Required missing", a filter for items whose title / summary / tags / SEO fields /
    extra-language summaries use one of the style guide's words to avoid (a person's edit saved with a warning, or
    model text written before the word was added); off without words to avoid in the style guide."""
    from pipeline.admin.brand import clean_style_guide

    store, batch_id, items = batch
    app = review_page()
    assert app.checkbox(key="filter-avoided").disabled  # no style guide yet: nothing to look for
    store.edit_item(items[1].id, "summary", "A cheap blurry shirt.", "someone")  # saved before the guide listed "cheap"
    store.edit_item(items[3].id, "tags", ["shirt", "Bargain"], "someone")  # the approved one: its tags
    store.save_style_guide(clean_style_guide("", "cheap, bargain", ""), "admin", expected_version=0)
    app = review_page()
    avoided = app.checkbox(key="filter-avoided")
    assert not avoided.disabled and avoided.label == "Words to avoid"
    avoided.check().run()
    assert not app.exception, app.exception
    assert list(grid(app).value["Item"]) == ["#2 SKU-1", "#4 SKU-3"]
    assert any("Showing 2 of 5 items." in c.value for c in app.caption)
    app.multiselect(key="filter-status").set_value(["pending"]).run()  # combines with the other filters
    assert list(grid(app).value["Item"]) == ["#2 SKU-1"]
    app.checkbox(key="filter-avoided").uncheck().run()
    assert list(grid(app).value["Item"]) == ["#1 SKU-0", "#2 SKU-1", "#3 SKU-2"]


def test_a_multi_language_batch_shows_each_languages_summary_in_the_grid_and_saves_it(batch):
    """Issue 19: the batch's extra summary languages get a column each under All columns (the compact view keeps its
    1366 px fit and says where they are); an edit saves with its language's limit, an over-limit one is refused."""
    store, batch_id, items = batch
    store.set_batch_languages(batch_id, ("de", "ja"))
    for item in items[:4]:
        store.edit_item(item.id, "summary:de", f"Hemd {item.seq}.", "processing")
        store.edit_item(item.id, "summary:ja", f"シャツ{item.seq}。", "processing")
    app = review_page()
    assert "Summary (de)" not in grid(app).proto.column_order  # compact: unchanged
    assert any("also has summaries in de, ja: turn on All columns" in c.value for c in app.caption)
    app.toggle(key="grid-all-columns").set_value(True).run()
    editor = grid(app)
    order = list(editor.proto.column_order)
    assert order.index("Summary") < order.index("Summary (de)") < order.index("Summary (ja)")
    assert editor.value["Summary (de)"].tolist()[:4] == ["Hemd 0.", "Hemd 1.", "Hemd 2.", "Hemd 3."]
    assert editor.value["Summary (ja)"].iloc[1] == "シャツ1。" and editor.value["Summary (ja)"].iloc[4] == ""  # the failed item
    config = json.loads(editor.proto.columns)
    assert not config["Summary (de)"].get("disabled") and "125 characters" in config["Summary (ja)"]["help"]

    key = app.session_state["grid-shown"]
    edit_grid(app, key, {0: {"Summary (de)": "Ein rotes Hemd."}, 1: {"Summary (ja)": "あ" * 126}})
    assert any("Summary (ja) has 126 characters (limit 125 characters)" in shown(w.value) for w in app.warning)
    button(app, "Save changes").click().run()
    assert not app.exception, app.exception
    assert store.get_item(items[0].id).summaries["de"] == "Ein rotes Hemd."
    assert store.get_item(items[1].id).summaries["ja"] == "シャツ1。"  # refused, kept for the person
    assert any("SKU-1" in shown(e.value) and "125" in shown(e.value) for e in app.error)


def test_the_one_item_view_warns_of_a_word_to_avoid_while_typing_and_saves_it(batch):
    from pipeline.admin.brand import clean_style_guide

    store, batch_id, items = batch
    store.save_style_guide(clean_style_guide("", "cheap", ""), "admin", expected_version=0)
    app = review_page()
    [summary] = [t for t in app.text_area if t.label == "Summary"]
    summary.input("A cheap red shirt.").run()
    assert any("#1 SKU-0: Summary uses 'cheap', from the style guide's words to avoid. It will be saved" in shown(w.value)
               for w in app.warning)
    app.button(key="focus-save").click().run()
    assert not app.exception, app.exception
    assert store.get_item(items[0].id).summary == "A cheap red shirt."
    assert any("Uses the style guide's words to avoid: Summary: 'cheap'." in shown(w.value) for w in app.warning)  # flagged


def require_color(store) -> None:
    """An active taxonomy that requires colour: item #3's "maroonish" is outside the list, so it cannot be approved."""
    from pipeline.admin.taxonomy import activate_taxonomy, default_schema_text, save_taxonomy

    data = json.loads(default_schema_text())
    next(a for a in data["attributes"] if a["name"] == "color")["required"] = True
    save_taxonomy(store, json.dumps(data), "admin", based_on=0)
    activate_taxonomy(store, 1, "admin")


MAROONISH_REFUSAL = ('#3 SKU-2: Not approved: the taxonomy requires color ("maroonish" is not an allowed value) for every item. '
                     "Set it to one of the allowed values, then approve.")


def test_the_grids_status_cell_cannot_approve_what_approve_refuses(batch):
    """Typing "approved" into the Status cell and pressing Save changes stored it for an item missing a required
    attribute and for a failed item ("Saved: 1 change saved.", then exported as approved). Now the cell gets the same
    refusal as Approve selected, and the item that may be approved is."""
    store, batch_id, items = batch
    require_color(store)
    app = review_page()
    edit_grid(app, f"grid-{batch_id}-0", {0: {"Status": "approved"}, 2: {"Status": "approved"}, 4: {"Status": "approved"}})
    button(app, "Save changes").click().run()
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [MAROONISH_REFUSAL, "#5 SKU-4: failed items cannot be approved."]
    assert [s.value for s in app.success] == ["Saved: 1 change saved."]  # #1's approval only
    assert [store.get_item(i.id).review_status for i in items] == ["approved", "pending", "pending", "approved", "pending"]
    assert grid(app).value["Status"].tolist() == ["approved", "pending", "pending", "approved", "pending"]  # as stored


def test_a_refused_approve_in_the_one_item_view_says_the_typed_fields_saved_and_not_approved(batch):
    """Approve on an item missing a required attribute, with a new summary typed: the summary is saved, the approval
    refused, and the page said "Approved: 1 change saved." beside the refusal. Now it says what happened."""
    store, batch_id, items = batch
    require_color(store)
    app = review_page()
    app.selectbox(key="focus-item").set_value(items[2].id).run()
    [summary] = [t for t in app.text_area if t.label == "Summary"]
    summary.input("A new summary typed before approving.").run()
    button(app, "Approve").click().run()
    assert not app.exception, app.exception
    assert [s.value for s in app.success] == ["Saved: 1 change saved; not approved (see below)."]
    assert [shown(e.value) for e in app.error] == [MAROONISH_REFUSAL]
    item = store.get_item(items[2].id)
    assert (item.review_status, item.summary) == ("pending", "A new summary typed before approving.")
    assert app.selectbox(key="focus-item").value == items[2].id  # stays on the item to fix it

    # colour set to an allowed value, then Approve: approved, and said so
    [color] = [s for s in app.selectbox if s.label.startswith("color")]
    color.set_value("red").run()
    button(app, "Approve").click().run()
    assert [s.value for s in app.success] == ["Approved: 2 changes saved."] and not app.error
    assert store.get_item(items[2].id).review_status == "approved"


def test_an_over_long_title_is_warned_while_typing_and_refused_on_save_in_the_grid_and_the_one_item_view(batch):
    """A 17,999-character title typed in Review was saved; now 150 characters at most (the Google feed's title limit)."""
    store, batch_id, items = batch
    app = review_page()
    app.toggle(key="grid-all-columns").set_value(True).run()
    long = "x" * 17_999
    sentence = "The title has 17999 characters; the limit is 150 (what product feeds show). Shorten it and save again."
    edit_grid(app, app.session_state["grid-shown"], {0: {"Title": long}, 1: {"Title": "Blue shirt"}})
    assert [shown(w.value) for w in app.warning if "title" in w.value] == [f"#1 SKU-0: {sentence}"]
    button(app, "Save changes").click().run()
    assert not app.exception, app.exception
    assert [shown(e.value) for e in app.error] == [f"#1 SKU-0: {sentence}"]
    assert [store.get_item(i.id).title for i in items[:2]] == ["Shirt 0", "Blue shirt"]
    kept = [d.value for d in app.dataframe if "Your value" in d.value.columns]
    assert kept and kept[0]["Your value"].tolist() == [long]

    app.text_input(key=[t.key for t in app.text_input if t.label == "Title"][0]).input("y" * 151).run()
    assert any("151 / 150 characters — too long" in c.value for c in app.caption)
    app.button(key="focus-save").click().run()
    assert [shown(e.value) for e in app.error] == [
        "#1 SKU-0: The title has 151 characters; the limit is 150 (what product feeds show). Shorten it and save again."]
    assert store.get_item(items[0].id).title == "Shirt 0"
