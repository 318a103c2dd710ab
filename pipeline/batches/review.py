"""Reviewing results: the editable grid's rows, saving a person's edits, regenerating summaries.

Plain functions over the Store so the dashboard (and tests) only pass data in and out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.attributes import AttributeSchema
from pipeline.batches.export import photo_warnings, result_label
from pipeline.errors import UserFacingError, describe_error, usage_of
from pipeline.models import Edit, ItemRecord, SummaryRequest
from pipeline.store import StaleEditError, Store
from pipeline.summarizers import Summarizer
from pipeline.wordlimit import MAX_SUMMARY_WORDS, count_words

# Grid column -> store field. Attribute columns map to "attribute:<name>".
TEXT_COLUMNS = {"Title": "title", "Caption": "caption", "Summary": "summary", "Tags": "tags", "Status": "review_status"}

# SEO and accessibility columns (issue 19): grid column -> store field, each held to SEO_LIMITS on save
SEO_COLUMNS = {"SEO title": "seo_title", "Meta description": "meta_description", "Alt text": "alt_text"}

# Where an item stands for a reviewer (the Review page's status filter): failed items, then the review status.
REVIEW_STATES = {"pending": "Pending review", "approved": "Approved", "rejected": "Rejected", "failed": "Failed"}


@dataclass
class SaveReport:
    saved: list[Edit] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one message per refused cell, naming the item
    kept: list[dict[str, Any]] = field(default_factory=list)  # the values typed for refused cells: {"Item", "Field", "Your value"}
    # items someone else changed since the page showed them -> their current version; the page's versions move
    # on to it only after the whole save, so saving again knowingly replaces the other change
    stale_items: dict[int, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # saved, but worth a look: a word to avoid in a person's edit

    @property
    def ok(self) -> bool:
        return not self.refused

    def refuse(self, store: Store, item_id: int, reason: str) -> str:
        """Record a refusal naming the item; returns the item's label."""
        item = store.get_item(item_id)
        label = item_label(item) if item else str(item_id)
        self.refused.append(f"{label}: {reason}")
        return label


def item_label(item: ItemRecord) -> str:
    return f"#{item.seq + 1} {item.sku or item.source}"


def review_state(item: ItemRecord) -> str:
    """One of REVIEW_STATES: "failed" for items that could not be tagged, else the review status."""
    return "failed" if item.status == "error" else item.review_status


def attributes_to_review(item: ItemRecord) -> list[str]:
    """Attributes whose answer is not in the vocabulary (kept as answered, flagged for a person), and attributes the
    summarizer guessed (AttributeValue.source) until the item is approved. Approving is the person's check of a guess:
    the required check already counts the guessed value (an allowed one) as present, so Approve goes through, and the
    approval itself is what settles it; it clears nothing stored (the value keeps its source, so Quality still credits
    the summary model, and a reopened item lists the guess again)."""
    approved = item.review_status == "approved"
    return [a.name for a in item.attributes if not a.in_vocab and not (a.guessed_by and approved)]


def guess_note(attribute: Any) -> str:
    """' (guessed by gpt-4o)' for a value the summarizer guessed that no person has set since (an edit marks it
    in_vocab, as any person's choice; its source stays, for Quality), else ''."""
    if attribute is None or attribute.in_vocab or not attribute.guessed_by:
        return ""
    return f" (guessed by {attribute.guessed_by})"


# Fields a person writes that reach the shop, checked against the style guide's words to avoid when saved (issue 19):
# grid / one-item column -> how to read the item's current text. Extra-language summaries ("Summary (de)") too.
STYLE_CHECKED = {"Title": "title", "Summary": "summary", "Tags": "tags", **SEO_COLUMNS}


def current_style_guide(store: Store) -> Any:
    """The style guide the store holds now (None when there is none or it lists no words to avoid)."""
    guide = store.style_guide() if hasattr(store, "style_guide") else None
    return guide if guide is not None and guide.avoid else None


def _style_checked(column: str) -> bool:
    return column in STYLE_CHECKED or language_of_column(column) is not None


def avoided_words(item: ItemRecord, guide: Any) -> list[str]:
    """Where the item's current text uses a word to avoid: 'Summary: "cheap"', one phrase per field (brand.py's
    matcher: whole words in spaced scripts, anywhere in Japanese / Chinese / Thai text). Review flags such an item."""
    from pipeline.admin.brand import banned_words_in

    if guide is None or item.status != "ok":
        return []
    texts = {column: ", ".join(item.tags) if name == "tags" else getattr(item, name) or "" for column, name in STYLE_CHECKED.items()}
    texts.update({language_column(code): text for code, text in item.summaries.items()})
    found = []
    for column, text in texts.items():
        words = banned_words_in(text, guide)
        if words:
            found.append(f"{column}: {', '.join(repr(w) for w in words)}")
    return found


def style_problems(changes: dict[int, dict[str, Any]], labels: dict[int, str], guide: Any) -> list[str]:
    """Live check of typed title / summary / tags / SEO fields / extra-language summaries against the words to avoid,
    before saving: one sentence per cell (such an edit is saved anyway, see `save_changes`)."""
    from pipeline.admin.brand import banned_words_in

    problems = []
    for item_id, columns in changes.items():
        for column, value in columns.items():
            words = banned_words_in(str(value or ""), guide) if _style_checked(column) else []
            if words:
                problems.append(f"{labels.get(item_id, item_id)}: {column} uses {', '.join(repr(w) for w in words)}, "
                                "from the style guide's words to avoid.")
    return problems


def item_category(item: ItemRecord, schema: AttributeSchema) -> str | None:
    """The item's category as the taxonomy knows it (None when it has none, or one outside the category list)."""
    attribute = item.attribute("category")
    if attribute is None or "category" not in schema.names():
        return None
    return attribute.value if attribute.value in schema.spec("category").vocabulary else None


def missing_required(item: ItemRecord, schema: AttributeSchema) -> list[str]:
    """What a merchandiser must fix before the item can be approved: each attribute the taxonomy requires for the
    item's category (an attribute marked required, or listed under the category's "required") whose value is empty
    or not one of the attribute's allowed values, as a short phrase: 'size (no value)', 'color ("reddish" is not
    an allowed value)'. Values are read as stored now, so a person's edit to an allowed value settles it. Failed
    items are not checked (they cannot be approved anyway)."""
    if item.status != "ok":
        return []
    category = item_category(item, schema)
    required = schema.required_for(category) & schema.applies(category)
    problems = []
    for name in schema.names():
        if name not in required:
            continue
        attribute = item.attribute(name)
        value = (attribute.value or "").strip() if attribute else ""
        if not value:
            problems.append(f"{name} (no value)")
        elif value not in schema.spec(name).vocabulary:
            problems.append(f'{name} ("{value}" is not an allowed value)')
    return problems


def required_refusal(item: ItemRecord, schema: AttributeSchema) -> str | None:
    """The sentence refusing to approve an item with required attributes missing (None when nothing is missing)."""
    problems = missing_required(item, schema)
    if not problems:
        return None
    category = item_category(item, schema)
    whose = f'category "{category}"' if category and category in schema.categories else "every item"
    them = "it" if len(problems) == 1 else "them"
    return (f"Not approved: the taxonomy requires {', '.join(problems)} for {whose}. "
            f"Set {them} to one of the allowed values, then approve.")


def filter_items(items: Iterable[ItemRecord], states: Iterable[str] | None = None, *, low_confidence: bool = False,
                 photo_problems: bool = False, missing: bool = False, schema: AttributeSchema | None = None,
                 avoided: bool = False, guide: Any = None) -> list[ItemRecord]:
    """Items in one of `states` (REVIEW_STATES keys; None: all), optionally only those with attributes
    to review and/or photo-check warnings and/or required attributes missing (`missing`, checked against `schema`)
    and/or text using one of the style guide's words to avoid (`avoided`, checked against `guide`: none without one)."""
    wanted = set(REVIEW_STATES if states is None else states)
    return [item for item in items if review_state(item) in wanted
            and (not low_confidence or attributes_to_review(item))
            and (not photo_problems or photo_warnings(item))
            and (not missing or schema is None or missing_required(item, schema))
            and (not avoided or avoided_words(item, guide))]


def attributes_text(item: ItemRecord, schema: AttributeSchema) -> str:
    """All attribute values in schema order, one cell: "shirt · red · cotton?" (? = not in the vocabulary;
    "red (guessed by gpt-4o)": the summarizer's answer, the captioner had none in the list)."""
    values = []
    for name in schema.names():
        attribute = item.attribute(name)
        if attribute and attribute.value:
            values.append(attribute.value + (guess_note(attribute) or ("?" if not attribute.in_vocab else "")))
    return " · ".join(values)


def grid_rows(items: list[ItemRecord], schema: AttributeSchema,
              thumbnail: Callable[[str | None], str | None] | None = None, guide: Any = None,
              languages: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per item for the review grid; `id` identifies the item, the rest are shown.
    `thumbnail` (image_path -> URL, e.g. the image store's thumbnail_url) fills the Photo column; `guide` (the style
    guide) fills "Words to avoid"; `languages` (the batch's extra summary languages) add a "Summary (de)" column each,
    editable: saved with its language's limit like the one-item view's field."""
    rows = []
    for item in items:
        row: dict[str, Any] = {
            "id": item.id,
            "Select": False,
            "Photo": thumbnail(item.image_path) if thumbnail else None,
            "Item": item_label(item),
            "Result": result_label(item),
            "Status": item.review_status,
            "Title": item.title or "",
            "Caption": item.caption or "",
            "Summary": item.summary or "",
            "Words": item.word_count if item.word_count is not None else 0,
            "Tags": ", ".join(item.tags),
            "Attributes": attributes_text(item, schema),
        }
        for name in schema.names():
            attribute = item.attribute(name)
            row[name] = attribute.value if attribute else ""
        row["Warnings"] = "; ".join(photo_warnings(item))
        row["Required"] = ", ".join(missing_required(item, schema))  # must be set before it can be approved
        row["Words to avoid"] = "; ".join(avoided_words(item, guide))  # a person's edit that uses one (issue 19)
        row.update({column: getattr(item, name) or "" for column, name in SEO_COLUMNS.items()})  # issue 19
        row.update({language_column(code): item.summaries.get(code, "") for code in languages})  # issue 19
        rows.append(row)
    return rows


def field_for_column(column: str, schema: AttributeSchema) -> str | None:
    if column in TEXT_COLUMNS:
        return TEXT_COLUMNS[column]
    if column in SEO_COLUMNS:
        return SEO_COLUMNS[column]
    if column in schema.names():
        return f"attribute:{column}"
    code = language_of_column(column)
    if code is not None:
        return f"summary:{code}"  # an extra-language summary, held to its language's limit when saved
    return None  # not editable (Select, Words, Warnings, ...)


def batch_summary_languages(store: Store, batch_id: int, items: Iterable[ItemRecord] = ()) -> list[str]:
    """The extra summary languages to show for a batch: the ones it was tagged with, then any an item holds."""
    codes = list(store.batch_languages(batch_id)) if hasattr(store, "batch_languages") else []
    for item in items:
        codes += [code for code in item.summaries if code not in codes]
    return codes


def language_column(code: str) -> str:
    """The column / field label of an extra-language summary: 'Summary (de)'."""
    return f"Summary ({code})"


def language_of_column(column: str) -> str | None:
    if column.startswith("Summary (") and column.endswith(")") and 2 <= len(column) - len("Summary ()") <= 5:
        return column[len("Summary ("):-1]
    return None


def real_changes(changes: dict[int, dict[str, Any]], schema: AttributeSchema) -> dict[int, dict[str, Any]]:
    """The grid's edited cells that save something: ticking Select (or any other column the store
    does not keep) is not a change."""
    kept = {item_id: {column: value for column, value in columns.items() if field_for_column(column, schema)}
            for item_id, columns in changes.items()}
    return {item_id: columns for item_id, columns in kept.items() if columns}


def changed_fields(item: ItemRecord, values: dict[str, Any], schema: AttributeSchema) -> dict[str, Any]:
    """{column: value} for the values (by grid column name) that differ from the item as stored."""
    current: dict[str, Any] = {"Title": item.title or "", "Caption": item.caption or "", "Summary": item.summary or "",
                               "Tags": ", ".join(item.tags), "Status": item.review_status}
    for name in schema.names():
        attribute = item.attribute(name)
        current[name] = attribute.value if attribute else ""
    current.update({language_column(code): text for code, text in item.summaries.items()})
    current.update({column: getattr(item, name) or "" for column, name in SEO_COLUMNS.items()})
    changed = {}
    for column, value in values.items():
        if column == "Tags":
            same = [t.strip() for t in str(value or "").split(",") if t.strip()] == item.tags
        else:
            same = str(value or "").strip() == str(current.get(column) or "").strip()
        if not same:
            changed[column] = value
    return changed


def seo_problems(changes: dict[int, dict[str, Any]], labels: dict[int, str]) -> list[str]:
    """Live check of edited titles (MAX_TITLE_CHARACTERS) and SEO title / meta description / alt text (limits, alt
    text's marketing words), before saving; the same sentences the store refuses such a save with."""
    from pipeline.wordlimit import seo_problem, title_problem

    problems = []
    for item_id, columns in changes.items():
        problem = title_problem(str(columns["Title"] or "")) if "Title" in columns else None
        if problem:
            problems.append(f"{labels.get(item_id, item_id)}: {problem}")
        for column, name in SEO_COLUMNS.items():
            if column in columns:
                problem = seo_problem(name, " ".join(str(columns[column] or "").split()))
                if problem:
                    problems.append(f"{labels.get(item_id, item_id)}: {problem}")
    return problems


def summary_word_problems(changes: dict[int, dict[str, Any]], labels: dict[int, str]) -> list[str]:
    """Live check of edited summaries against the limit (an extra language's: its own, words or characters), before
    anything is saved."""
    from pipeline.wordlimit import limit_text, measure, within_limit

    problems = []
    for item_id, columns in changes.items():
        if "Summary" in columns:
            words = count_words(str(columns["Summary"] or ""))
            if words > MAX_SUMMARY_WORDS:
                problems.append(f"{labels.get(item_id, item_id)}: summary has {words} words (limit {MAX_SUMMARY_WORDS}).")
        for column, value in columns.items():
            code = language_of_column(column)
            text = " ".join(str(value or "").split())
            if code is not None and not within_limit(text, code):
                problems.append(f"{labels.get(item_id, item_id)}: {column} has {measure(text, code)} "
                                f"{limit_text(code).split()[1]} (limit {limit_text(code)}).")
    return problems


def _edit(store: Store, report: SaveReport, item_id: int, field_name: str, value: Any, who: str,
          versions: dict[int, int] | None, column: str) -> None:
    """One cell. `versions` ({item_id: version the page showed}) makes a save of an item someone else
    changed since be refused with who and when; it is updated as edits land (and, after a refusal,
    to the current version, so saving again knowingly replaces the other change)."""
    if item_id in report.stale_items:  # changed by someone else: the rest typed for it is kept, not written blind
        label = report.refuse(store, item_id, f"{column}: Not saved: this item changed meanwhile (see above); your text is kept.")
        report.kept.append({"Item": label, "Field": column, "Your value": str(value)})
        return
    expected = versions.get(item_id) if versions is not None else None
    try:
        edit = store.edit_item(item_id, field_name, value, who, expected_version=expected)
    except StaleEditError as stale:
        label = report.refuse(store, item_id, f"{column}: {stale}")
        report.kept.append({"Item": label, "Field": column, "Your value": str(value)})
        if stale.current_version is not None:
            report.stale_items[item_id] = stale.current_version
        return
    except UserFacingError as error:
        label = report.refuse(store, item_id, str(error))
        report.kept.append({"Item": label, "Field": column, "Your value": str(value)})
        return
    if edit is not None:
        report.saved.append(edit)
        if versions is not None and edit.version is not None:
            versions[item_id] = edit.version


def save_changes(store: Store, changes: dict[int, dict[str, Any]], schema: AttributeSchema, who: str,
                 versions: dict[int, int] | None = None) -> SaveReport:
    """Save every changed cell ({item_id: {column: new value}}); each cell is its own edit with
    who/when. A refused cell (e.g. an over-long summary, or an item changed by someone else since
    the page showed `versions`) is reported with the value typed and the others still save. A Status cell is set after
    the row's other cells, under the same rules as Approve (`change_review_status`): a failed item, or one missing a
    required attribute, is not approved, nor is an item another of whose cells was just refused.

    A saved title / summary / tags / SEO field / extra-language summary that uses one of the style guide's words to
    avoid is SAVED, with a warning per cell in `report.warnings`, and the item stays flagged in Review (`avoided_words`)
    while the word is there. Warned, not refused: model answers with such a word fail, because nobody has read them,
    but here a person typed it and read it: it may be right (a brand or product name that contains the word, a
    quotation), refusing would throw their typing back at them, and the flag keeps it in sight of whoever approves."""
    report = SaveReport()
    guide = current_style_guide(store)
    for item_id, columns in changes.items():
        refused_before = len(report.refused)
        for column, value in columns.items():
            field_name = field_for_column(column, schema)
            if field_name is None or field_name == "review_status":
                continue  # the Status cell is set last, under the approval rules (below)
            refusal = _language_refusal(store, item_id, field_name)
            if refusal is not None:
                label = report.refuse(store, item_id, f"{column}: {refusal}")
                report.kept.append({"Item": label, "Field": column, "Your value": str(value)})
                continue
            saved = len(report.saved)
            _edit(store, report, item_id, field_name, value, who, versions, column)
            if len(report.saved) > saved and guide is not None and _style_checked(column):
                _warn_avoided(store, report, item_id, column, report.saved[-1].new or "", guide)
        status_column = next((column for column in columns if field_for_column(column, schema) == "review_status"), None)
        if status_column is not None:  # after the row's other cells: a required attribute set in the same save counts
            status = str(columns[status_column] or "").strip()
            if status == "approved" and len(report.refused) > refused_before:
                report.refuse(store, item_id, "Status: Not approved: another change to this item was not saved (see above).")
            else:
                change_review_status(store, report, item_id, status, who, versions, schema)
    _move_versions_on(report, versions)
    return report


def _warn_avoided(store: Store, report: SaveReport, item_id: int, column: str, text: str, guide: Any) -> None:
    from pipeline.admin.brand import banned_words_in

    words = banned_words_in(text, guide)
    if words:
        item = store.get_item(item_id)
        label = item_label(item) if item else str(item_id)
        report.warnings.append(f"{label}: {column} saved, but it uses {', '.join(repr(w) for w in words)} from the style "
                               "guide's words to avoid; the item is flagged in Review until it is rewritten.")


def _language_refusal(store: Store, item_id: int, field_name: str) -> str | None:
    """The sentence refusing a summary in a language the item's batch was not tagged with (None when it was, or when
    the item already has a summary in it): a `Summary (zh)` typed in would add a column no run writes or checks."""
    if not field_name.startswith("summary:"):
        return None
    code = field_name.split(":", 1)[1]
    item = store.get_item(item_id)
    if item is None or code in item.summaries:
        return None
    languages = list(store.batch_languages(item.batch_id)) if hasattr(store, "batch_languages") else []
    if code in languages:
        return None
    tagged = f"its summary languages are English, {', '.join(languages)}" if languages else "it has English summaries only"
    return f"Not saved: batch {item.batch_id} was not tagged with {code} summaries ({tagged})."


def _move_versions_on(report: SaveReport, versions: dict[int, int] | None) -> None:
    if versions is not None:
        versions.update(report.stale_items)


def set_review_status(store: Store, item_ids: list[int], status: str, who: str,
                      versions: dict[int, int] | None = None, schema: AttributeSchema | None = None) -> SaveReport:
    """Approve / reject / reset many items; only tagged items can be approved, and only when every attribute the
    taxonomy (`schema`, the one Review shows; None: the active taxonomy over the shipped default) requires for the
    item's category has an allowed value. Rejecting is always possible."""
    report = SaveReport()
    if status == "approved" and schema is None:
        schema = _active_schema(store)  # read once for all the items
    for item_id in item_ids:
        change_review_status(store, report, item_id, status, who, versions, schema)
    _move_versions_on(report, versions)
    return report


def status_refusal(item: ItemRecord, status: str, schema: AttributeSchema) -> str | None:
    """The sentence refusing to set `item`'s review status to `status` (None when it may): only a tagged item can be
    approved, and only when every attribute `schema` requires for its category has an allowed value (`required_refusal`).
    Rejecting or setting back to pending is always possible."""
    if status != "approved":
        return None
    if item.status != "ok":
        return "failed items cannot be approved."
    return required_refusal(item, schema)


def change_review_status(store: Store, report: SaveReport, item_id: int, status: str, who: str,
                         versions: dict[int, int] | None = None, schema: AttributeSchema | None = None) -> None:
    """Every change of an item's review status goes through here (Approve / Reject selected, the grid's Status cell, the
    one-item view): refused with `status_refusal`'s sentence, naming the item, else saved as an edit with who/when.
    `schema`: the taxonomy Review shows (None: the active taxonomy over the shipped default)."""
    item = store.get_item(item_id)
    if item is None:
        return
    if item_id in report.stale_items:  # changed by someone else since shown: not approved blind (see `_edit`)
        _edit(store, report, item_id, "review_status", status, who, versions, "Status")
        return
    if schema is None and status == "approved":
        schema = _active_schema(store)
    refusal = status_refusal(item, status, schema) if schema is not None else None
    if refusal is not None:
        report.refused.append(f"{item_label(item)}: {refusal}")
        return
    _edit(store, report, item_id, "review_status", status, who, versions, "Status")


def _active_schema(store: Store) -> AttributeSchema:
    from pipeline.admin.taxonomy import active_taxonomy
    from pipeline.attributes import load_attribute_schema

    return active_taxonomy(store, load_attribute_schema())[1]


def review_item(store: Store, item_id: int, changes: dict[str, Any], status: str | None, schema: AttributeSchema,
                who: str, versions: dict[int, int] | None = None) -> SaveReport:
    """The one-item view: save its edited fields ({column: value}), then set its review status.
    If any edit is refused the status is left alone (nothing is approved with a change missing); a required
    attribute filled in with the same press counts (the fields are saved before the approval is checked)."""
    report = save_changes(store, {item_id: changes}, schema, who, versions) if changes else SaveReport()
    if status is not None and report.ok:
        done = set_review_status(store, [item_id], status, who, versions, schema)
        report.saved += done.saved
        report.refused += done.refused
        report.kept += done.kept
        report.warnings += done.warnings
    return report


def regenerate_summary(store: Store, summarizer: Summarizer, item_id: int, who: str) -> Edit | None:
    """Write a new summary from the item's *current* caption and attributes (including edits)."""
    item = store.get_item(item_id)
    if item is None or item.status != "ok":
        raise UserFacingError("Only tagged items can get a new summary.")
    from pipeline.admin.brand import request_options

    options = request_options(store, item.batch_id)  # the style guide and the batch's extra languages (issue 19)
    if getattr(summarizer, "name", None) == "offline":
        options["languages"] = ()  # English only: the other languages' summaries are kept as they are
    request = SummaryRequest(caption=item.caption or "", attributes=item.attributes, checks=item.checks, hints=item.hints,
                             sku=item.sku, **options)
    try:
        result = summarizer.summarize(request)
    except Exception as exc:
        store.record_usage(item_id, usage_of(exc))  # a failed regeneration may still have been paid for
        raise
    store.record_usage(item_id, result.usage)  # paid for even if the text happens to be unchanged
    edit = store.edit_item(item_id, "summary", result.summary, f"{who} (regenerated)")
    for code, text in result.summaries.items():  # each extra language rewritten from the same facts
        store.edit_item(item_id, f"summary:{code}", text, f"{who} (regenerated)")
    for name in SEO_COLUMNS.values():  # SEO title, meta description, alt text from the same answer (issue 19)
        if getattr(result, name, ""):
            store.edit_item(item_id, name, getattr(result, name), f"{who} (regenerated)")
    return edit


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

