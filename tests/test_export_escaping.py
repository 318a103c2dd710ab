"""Formula (CSV) injection: every way a cell can still start a formula in a spreadsheet is escaped."""

from __future__ import annotations

import csv
import io

import pytest

from pipeline.attributes import load_attribute_schema
from pipeline.batches.export import escape_formula, export_csv, export_shopify_csv
from pipeline.models import ItemRecord

DANGEROUS = [
    # the plain triggers (escaped before too)
    "=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx",
    # fullwidth and small-form lookalikes
    "＝HYPERLINK(\"http://x\")", "＋1", "－1+2", "＠SUM(A1)", "﹦1+1", "﹢1", "﹣1+2", "﹫SUM(A1)", "\u22121+2",
    # skipped leading characters before a trigger
    " =1+1", "   =1+1", "\t=1+1", " \t =1+1", "\n=1+1", "\r\n=1+1", "\ufeff=1+1", "\ufeff+1",
    "\u00a0=1+1", "\u3000＝1+1", "\u200b=1+1", "\u200e@SUM(A1)", "\u2060-1+2",
    # a leading line break alone
    "\nline", "\r\nline",
]

HARMLESS = ["", "plain text", " leading space", "a=b", "1+1", "5", "Ｂｌｕｅ shirt", "\ufeffname", "e-mail", "50% off - today"]


@pytest.mark.parametrize("value", DANGEROUS)
def test_cells_that_would_start_a_formula_are_quoted(value):
    assert escape_formula(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS)
def test_ordinary_text_is_left_alone(value):
    assert escape_formula(value) == value


@pytest.mark.parametrize("value", [-5, -0.25, 0, 3.5, True, None])
def test_numbers_stay_numbers_negative_ones_included(value):
    assert escape_formula(value) is value


def read(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_both_exports_escape_every_text_column():
    value = " ＝HYPERLINK(\"http://evil\")"
    item = ItemRecord(
        id=1, batch_id=1, seq=0, source=value, ref=None, sku=value, hints={"notes": "\ufeff=1+1"},
        status="ok", title=value, caption="\n=cmd", summary="﹣1+2", tags=["＠x"], review_status="approved",
    )
    row = read(export_csv([item], load_attribute_schema()))[0]
    assert row["sku"] == row["title"] == "'" + value
    assert row["hint_notes"] == "'\ufeff=1+1" and row["caption"] == "'\n=cmd" and row["summary"] == "'﹣1+2" and row["tags"] == "'＠x"
    shopify = read(export_shopify_csv([item]))[0]
    assert shopify["Title"] == "'" + value and shopify["Image Alt Text"] == "'\n=cmd" and shopify["Variant SKU"] == "'" + value
    assert shopify["Tags"] == "'＠x"
