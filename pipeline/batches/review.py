"""Reviewing results: the editable grid's rows, saving a person's edits, regenerating summaries.

Plain functions over the Store so the dashboard (and tests) only pass data in and out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.attributes import AttributeSchema
from pipeline.errors import UserFacingError, describe_error, usage_of
from pipeline.models import Edit, ItemRecord, SummaryRequest
from pipeline.store import StaleEditError, Store
from pipeline.summarizers import Summarizer
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words

# Grid column -> store field. Attribute columns map to "attribute:<name>".
TEXT_COLUMNS = {"Title": "title", "Caption": "caption", "Summary": "summary", "Tags": "tags", "Status": "review_status"}


@dataclass
class SaveReport:
    saved: list[Edit] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one message per refused cell, naming the item

    @property
    def ok(self) -> bool:
        return not self.refused

    def refuse(self, store: Store, item_id: int, reason: str) -> None:
        item = store.get_item(item_id)
        self.refused.append(f"{item_label(item) if item else item_id}: {reason}")


def item_label(item: ItemRecord) -> str:
    return f"#{item.seq + 1} {item.sku or item.source}"


def grid_rows(items: list[ItemRecord], schema: AttributeSchema) -> list[dict[str, Any]]:
    """One row per item for the review grid; `id` identifies the item, the rest are shown."""
    rows = []
    for item in items:
        row: dict[str, Any] = {
            "id": item.id,
            "Select": False,
            "Item": item_label(item),
            "Result": "failed: " + (item.error or "") if item.status == "error" else item.status,
            "Status": item.review_status,
            "Title": item.title or "",
            "Caption": item.caption or "",
            "Summary": item.summary or "",
            "Words": item.word_count if item.word_count is not None else 0,
            "Tags": ", ".join(item.tags),
        }
        for name in schema.names():
            attribute = item.attribute(name)
            row[name] = attribute.value if attribute else ""
        row["Warnings"] = "; ".join(item.checks.warnings()) if item.checks else ""
        rows.append(row)
    return rows


def field_for_column(column: str, schema: AttributeSchema) -> str | None:
    if column in TEXT_COLUMNS:
        return TEXT_COLUMNS[column]
    if column in schema.names():
        return f"attribute:{column}"
    return None  # not editable (Select, Words, Warnings, ...)


def summary_word_problems(changes: dict[int, dict[str, Any]], labels: dict[int, str]) -> list[str]:
    """Live check of edited summaries against the limit, before anything is saved."""
    problems = []
    for item_id, columns in changes.items():
        if "Summary" in columns:
            words = count_words(str(columns["Summary"] or ""))
            if words > MAX_SUMMARY_WORDS:
                problems.append(f"{labels.get(item_id, item_id)}: summary has {words} words (limit {MAX_SUMMARY_WORDS}).")
    return problems


def _edit(store: Store, report: SaveReport, item_id: int, field_name: str, value: Any, who: str,
          versions: dict[int, int] | None, column: str) -> None:
    """One cell. `versions` ({item_id: version the page showed}) makes a save of an item someone else
    changed since be refused with who and when; it is updated as edits land (and, after a refusal,
    to the current version, so saving again knowingly replaces the other change)."""
    expected = versions.get(item_id) if versions is not None else None
    try:
        edit = store.edit_item(item_id, field_name, value, who, expected_version=expected)
    except StaleEditError as stale:
        report.refuse(store, item_id, f"{column}: {stale}")
        if versions is not None and stale.current_version is not None:
            versions[item_id] = stale.current_version
        return
    except UserFacingError as error:
        report.refuse(store, item_id, str(error))
        return
    if edit is not None:
        report.saved.append(edit)
        if versions is not None and edit.version is not None:
            versions[item_id] = edit.version


def save_changes(store: Store, changes: dict[int, dict[str, Any]], schema: AttributeSchema, who: str,
                 versions: dict[int, int] | None = None) -> SaveReport:
    """Save every changed cell ({item_id: {column: new value}}); each cell is its own edit with
    who/when. A refused cell (e.g. an over-long summary, or an item changed by someone else since
    the page showed `versions`) is reported with the value typed and the others still save."""
    report = SaveReport()
    for item_id, columns in changes.items():
        for column, value in columns.items():
            field_name = field_for_column(column, schema)
            if field_name is None:
                continue
            _edit(store, report, item_id, field_name, value, who, versions, column)
    return report


def set_review_status(store: Store, item_ids: list[int], status: str, who: str,
                      versions: dict[int, int] | None = None) -> SaveReport:
    """Approve / reject / reset many items; only tagged items can be approved."""
    report = SaveReport()
    for item_id in item_ids:
        item = store.get_item(item_id)
        if item is None:
            continue
        if status == "approved" and item.status != "ok":
            report.refused.append(f"{item_label(item)}: failed items cannot be approved.")
            continue
        _edit(store, report, item_id, "review_status", status, who, versions, "Status")
    return report


def regenerate_summary(store: Store, summarizer: Summarizer, item_id: int, who: str) -> Edit | None:
    """Write a new summary from the item's *current* caption and attributes (including edits)."""
    item = store.get_item(item_id)
    if item is None or item.status != "ok":
        raise UserFacingError("Only tagged items can get a new summary.")
    request = SummaryRequest(caption=item.caption or "", attributes=item.attributes, checks=item.checks, hints=item.hints, sku=item.sku)
    try:
        result = summarizer.summarize(request)
    except Exception as exc:
        store.record_usage(item_id, usage_of(exc))  # a failed regeneration may still have been paid for
        raise
    store.record_usage(item_id, result.usage)  # paid for even if the text happens to be unchanged
    return store.edit_item(item_id, "summary", result.summary, f"{who} (regenerated)")


def regenerate_summaries(store: Store, summarizer: Summarizer, item_ids: list[int], who: str) -> SaveReport:
    report = SaveReport()
    for item_id in item_ids:
        try:
            edit = regenerate_summary(store, summarizer, item_id, who)
        except Exception as error:  # one failure never stops the others
            report.refuse(store, item_id, describe_error(error))
            continue
        if edit is not None:
            report.saved.append(edit)
    return report

