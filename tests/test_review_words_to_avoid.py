"""Issue 19: a person's Review edit that uses one of the style guide's words to avoid is saved with a warning naming
the word, and the item stays flagged (Words to avoid, the Notes cell) until it is rewritten (both stores; brand.py's
matcher, so Japanese text is searched without word boundaries)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.admin.brand import clean_style_guide
from pipeline.attributes import load_attribute_schema
from pipeline.batches.review import avoided_words, current_style_guide, grid_rows, review_item, save_changes, style_problems
from pipeline.models import CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult
from support.images import jpeg_bytes

SCHEMA = load_attribute_schema()


def tagged(store, tmp_path: Path, languages: tuple[str, ...] = ()):
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes(size=(64, 64), seed=1))
    batch = store.create_batch("style", "ann", IngestReport(items=[SourceItem(source=path.name, ref=SourceRef("file", str(path)), sku="SKU-0")]))
    if languages:
        store.set_batch_languages(batch.id, languages)
    (item,) = store.list_items(batch.id)
    checks = PhotoChecks(10, 10, False, 400.0, False, 150.0, False, False, True, True, ["red"])
    store.save_result(item.id, ItemResult(content_key="k" * 64, image_path="p", caption=CaptionResult("a tee", {}, "m"), attributes=[],
                                          checks=checks, word_count=2,
                                          summary=SummaryResult("A red tee.", "Red tee", ["tee"], {}, "gpt-4o", False,
                                                                summaries={code: "赤いTシャツ。" for code in languages})), [])
    return store.get_item(item.id)


def test_an_edit_with_a_word_to_avoid_is_saved_with_a_warning_and_the_item_flagged(store, tmp_path):
    item = tagged(store, tmp_path, languages=("ja",))
    store.save_style_guide(clean_style_guide("", "cheap, bargain bin, 安い", "soft"), "admin", expected_version=0)
    guide = current_style_guide(store)
    assert avoided_words(item, guide) == []

    typed = {"Summary": "A CHEAP red tee.", "Tags": "tee, bargain  bin", "SEO title": "Red tee", "Summary (ja)": "とても安いTシャツ。",
             "Caption": "a cheap-looking tee"}  # the caption is what the photo shows, not shop copy: not checked
    assert style_problems({item.id: typed}, {item.id: "#1 SKU-0"}, guide) == [
        "#1 SKU-0: Summary uses 'cheap', from the style guide's words to avoid.",
        "#1 SKU-0: Tags uses 'bargain bin', from the style guide's words to avoid.",
        "#1 SKU-0: Summary (ja) uses '安い', from the style guide's words to avoid.",
    ]
    report = save_changes(store, {item.id: typed}, SCHEMA, "rev", {item.id: item.version})
    assert report.ok and len(report.saved) == 5  # saved: a person wrote it and read it
    assert report.warnings == [
        "#1 SKU-0: Summary saved, but it uses 'cheap' from the style guide's words to avoid; the item is flagged in Review until it is rewritten.",
        "#1 SKU-0: Tags saved, but it uses 'bargain bin' from the style guide's words to avoid; the item is flagged in Review until it is rewritten.",
        "#1 SKU-0: Summary (ja) saved, but it uses '安い' from the style guide's words to avoid; the item is flagged in Review until it is rewritten.",
    ]
    saved = store.get_item(item.id)
    assert saved.summary == "A CHEAP red tee." and saved.summaries["ja"] == "とても安いTシャツ。"
    flags = ["Summary: 'cheap'", "Tags: 'bargain bin'", "Summary (ja): '安い'"]
    assert avoided_words(saved, guide) == flags
    assert grid_rows([saved], SCHEMA, guide=guide)[0]["Words to avoid"] == "; ".join(flags)

    # "cheaply" is not the word "cheap"; rewriting every flagged field clears the flag
    fixed = review_item(store, item.id, {"Summary": "A red tee, cheaply made? No.", "Tags": "tee", "Summary (ja)": "赤いTシャツ。"},
                        "approved", SCHEMA, "rev", {item.id: saved.version})
    assert fixed.ok and fixed.warnings == [] and avoided_words(store.get_item(item.id), guide) == []
    assert store.get_item(item.id).review_status == "approved"


def test_without_words_to_avoid_nothing_is_flagged(store, tmp_path):
    item = tagged(store, tmp_path)
    store.save_style_guide(clean_style_guide("Warm.", "", "soft"), "admin", expected_version=0)
    assert current_style_guide(store) is None
    report = save_changes(store, {item.id: {"Summary": "A cheap red tee."}}, SCHEMA, "rev")
    assert report.ok and report.warnings == []
