"""The attribute taxonomy as versioned data in the store (Admin → Taxonomy, issue 19).

A taxonomy is the attribute schema (pipeline/attribute_schema.json's shape): per attribute its question,
the caption prefix, the allowed values (`vocabulary`), synonyms mapped onto allowed values, and whether
it is `required` (the summarizer's structured output must then choose one of the values; otherwise it
may answer null). `category` is itself an attribute: its allowed values are the product categories.

Versions are immutable: saving stores version N+1 (who, when) only if the newest version is still the
one the editor started from (a conditional write in both stores), so two admins saving at once never
lose one: the second is told who saved meanwhile. Activation is a separate, explicit step. Version 0
is the configured default (ATTRIBUTE_SCHEMA, else the shipped file) and is what runs while the store
has never activated a version. A batch run reads the active version when it starts
(`follow_active_taxonomy`): the captioner's questions, the vocabulary mapping and the summarizer's
structured-output schema follow it, and every item records the version it was tagged with.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from dataclasses import replace
from importlib import resources
from typing import Any

from pipeline.attributes import AttributeSchema
from pipeline.errors import StaleTaxonomyError, TaxonomyError, UserFacingError  # noqa: F401 (the stores raise them; pages import them here)

MAX_TAXONOMY_BYTES = 256_000  # the STORED form (dump_taxonomy: indented, also what is downloaded): well inside DynamoDB's 400 KB item
MAX_INPUT_BYTES = 1_000_000  # an upload or the editor's text, read before parsing (any formatting of a storable taxonomy fits)
MAX_JSON_DEPTH = 20  # [ / { nesting read at most; a taxonomy is 4 deep ({"attributes": [{"vocabulary": [...]}]})
MAX_ATTRIBUTES = 16  # every attribute is a question in each caption request; the SageMaker endpoint answers at most 16 (MAX_QUESTIONS)
MAX_VALUES = 1_000  # per attribute
MAX_TEXT_CHARS = 300  # a question or prefix (sent with every caption request; the SageMaker endpoint refuses longer ones)
MAX_VALUE_CHARS = 100  # an allowed value or synonym
NOT_UNICODE = "holds text that is not valid Unicode (an unpaired surrogate such as \\ud800); remove that character."
TOP_KEYS = ("attributes", "categories")
CATEGORY_KEYS = ("attributes", "required")
ATTRIBUTE_KEYS = ("name", "question", "prefix", "vocabulary", "synonyms", "required")



def default_schema_text() -> str:
    return resources.files("pipeline").joinpath("attribute_schema.json").read_text(encoding="utf-8")


def parse_taxonomy(text: str | bytes) -> AttributeSchema:
    """A taxonomy from JSON text (an upload or the editor), or TaxonomyError with one plain sentence. The size
    limit applies to the stored form (dump_taxonomy), so every accepted taxonomy saves and its download re-uploads."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_INPUT_BYTES:
        raise TaxonomyError(f"The taxonomy text is {size // 1000} KB; at most {MAX_INPUT_BYTES // 1000} KB is read.")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TaxonomyError("The file is not UTF-8 text; save it as UTF-8 JSON and upload it again.") from None
    data = load_json(text, "The taxonomy")
    _check_unicode(data)
    schema = AttributeSchema.model_validate(check_document(data))
    stored = len(dump_taxonomy(schema).encode("utf-8"))
    if stored > MAX_TAXONOMY_BYTES:
        raise TaxonomyError(f"The taxonomy is {-(-stored // 1000)} KB as stored (indented JSON, as downloaded); "
                            f"at most {MAX_TAXONOMY_BYTES // 1000} KB is accepted.")
    return schema


_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[][{}]')  # a string (to its end if unterminated: linear) or a bracket


def load_json(text: str, what: str) -> Any:
    """json.loads with the nesting counted first (a deeply nested document exhausts the parser's recursion);
    TaxonomyError with one sentence starting with `what` ("The taxonomy", "The attribute") when it cannot be used."""
    depth = 0
    for token in _JSON_TOKENS.findall(text):
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise TaxonomyError(f"{what} is nested too deeply: at most {MAX_JSON_DEPTH} levels of brackets are read "
                                    f"(a taxonomy needs 4).")
        elif token in ("]", "}"):
            depth -= 1
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None


def _is_unicode(data: Any) -> bool:
    """No lone surrogate anywhere (JSON's "\\ud800" escape decodes to one; it cannot be stored, shown or encoded)."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(data, dict):
        return all(_is_unicode(k) and _is_unicode(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_is_unicode(v) for v in data)
    return True


def _check_unicode(data: Any) -> None:
    """Refuse text that is not valid Unicode before any message quotes it, naming the field that holds it."""
    if _is_unicode(data):
        return
    if not isinstance(data, dict):
        raise TaxonomyError(f"The taxonomy {NOT_UNICODE}")
    for key, value in data.items():
        if not _is_unicode(key):
            raise TaxonomyError(f"A key at the top of the taxonomy {NOT_UNICODE}")
        if key == "attributes" and isinstance(value, list):
            for position, attribute in enumerate(value, start=1):
                if _is_unicode(attribute):
                    continue
                if not isinstance(attribute, dict):
                    raise TaxonomyError(f"Attribute {position} {NOT_UNICODE}")
                name = attribute.get("name")
                label = f'Attribute "{_short(name)}"' if isinstance(name, str) and _is_unicode(name) else f"Attribute {position}"
                for field, text in attribute.items():
                    if not _is_unicode(field):
                        raise TaxonomyError(f"{label}: a key {NOT_UNICODE}")
                    if not _is_unicode(text):
                        raise TaxonomyError(f'{label}: "{field}" {NOT_UNICODE}')
        if not _is_unicode(value):
            raise TaxonomyError(f'"{key}" {NOT_UNICODE}')


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _shown(text: str) -> str:
    """`text` for a message with tabs, line breaks and other control characters written as escapes (\\t, \\n)."""
    return _short(json.dumps(text, ensure_ascii=False)[1:-1])


def check_document(data: Any) -> dict[str, Any]:
    """Every rule a taxonomy must follow, each failure one sentence naming the attribute and value."""
    if not isinstance(data, dict):
        raise TaxonomyError('The taxonomy must be a JSON object with an "attributes" list.')
    for key in data:
        if key not in TOP_KEYS:
            raise TaxonomyError(f'Unknown key "{_short(key)}" at the top of the taxonomy; the keys allowed there are "attributes" and "categories".')
    attributes = data.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise TaxonomyError('The taxonomy needs an "attributes" list with at least one attribute.')
    if len(attributes) > MAX_ATTRIBUTES:
        raise TaxonomyError(f"The taxonomy has {len(attributes)} attributes; at most {MAX_ATTRIBUTES} are allowed.")
    seen: set[str] = set()
    for position, attribute in enumerate(attributes, start=1):
        _check_attribute(attribute, position)
        if attribute["name"] in seen:
            raise TaxonomyError(f'The attribute "{attribute["name"]}" is defined twice.')
        seen.add(attribute["name"])
    _check_categories(data.get("categories", {}), attributes)
    return data


def _check_categories(categories: Any, attributes: list[dict[str, Any]]) -> None:
    """Per-category rules: keys are values of the `category` attribute; listed attributes exist."""
    if not isinstance(categories, dict):
        raise TaxonomyError('"categories" must be an object of "category value": {"attributes": [...], "required": [...]}.')
    if not categories:
        return
    by_name = {a["name"]: a for a in attributes}
    if "category" not in by_name:
        raise TaxonomyError('Per-category rules need a "category" attribute whose values are the product categories.')
    known = set(by_name["category"]["vocabulary"])
    for category, rule in categories.items():
        label = f'The rule for category "{_short(category)}"'
        if category not in known:
            raise TaxonomyError(f'{label}: "{_short(category)}" is not one of the "category" attribute\'s allowed values.')
        if not isinstance(rule, dict):
            raise TaxonomyError(f"{label} must be a JSON object.")
        for key in rule:
            if key not in CATEGORY_KEYS:
                raise TaxonomyError(f'{label} has an unknown key "{_short(key)}"; allowed keys are attributes, required.')
        for key in CATEGORY_KEYS:
            names = rule.get(key, [])
            if names is None and key == "attributes":
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TaxonomyError(f'{label}: "{key}" must be a list of attribute names.')
            for name in names:
                if name not in by_name:
                    raise TaxonomyError(f'{label} names the attribute "{_short(name)}", which the taxonomy does not define.')
        applies = rule.get("attributes")
        if applies is not None:
            for name in rule.get("required", []):
                if name not in applies and name != "category":
                    raise TaxonomyError(f'{label} requires "{_short(name)}" but does not list it among its attributes.')


def _check_attribute(attribute: Any, position: int) -> None:
    if not isinstance(attribute, dict):
        raise TaxonomyError(f"Attribute {position} must be a JSON object.")
    name = attribute.get("name")
    if not isinstance(name, str) or not _is_name(name):
        raise TaxonomyError(f"Attribute {position} needs a name of lower-case letters, digits and _ (starting with a letter), "
                            f"like \"color\" or \"sleeve_length\".")
    label = f'Attribute "{name}"'
    for key in attribute:
        if key not in ATTRIBUTE_KEYS:
            raise TaxonomyError(f'{label} has an unknown key "{_short(key)}"; allowed keys are {", ".join(ATTRIBUTE_KEYS)}.')
    for key in ("question", "prefix"):
        if not isinstance(attribute.get(key), str) or not attribute[key].strip():
            raise TaxonomyError(f'{label} needs a "{key}" text.')
        if len(attribute[key]) > MAX_TEXT_CHARS:
            raise TaxonomyError(f'{label}: the "{key}" is {len(attribute[key])} characters; at most {MAX_TEXT_CHARS} are allowed '
                                f'(it is sent with every caption request).')
        if _has_control(attribute[key]):
            raise TaxonomyError(f'{label}: the "{key}" contains a control character (a tab, a line break or similar); write it on one line.')
    values = attribute.get("vocabulary")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise TaxonomyError(f'{label} needs a "vocabulary" list of allowed values (non-empty texts).')
    if len(values) > MAX_VALUES:
        raise TaxonomyError(f"{label} has {len(values)} allowed values; at most {MAX_VALUES} are allowed.")
    folded: set[str] = set()
    for value in values:
        _check_word(label, "value", value)
        key = value.strip().lower()
        if key in folded:
            raise TaxonomyError(f'{label} lists the value "{_short(value)}" twice.')
        if value != key:
            raise TaxonomyError(f'{label}: the value "{_short(value)}" must be written in lower case without spaces around it '
                                f'(answers are matched in lower case).')
        folded.add(key)
    synonyms = attribute.get("synonyms", {})
    if not isinstance(synonyms, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in synonyms.items()):
        raise TaxonomyError(f'{label}: "synonyms" must be an object of "word": "allowed value".')
    for word, target in synonyms.items():
        _check_word(label, "synonym", word)
        if target not in folded:
            raise TaxonomyError(f'{label}: the synonym "{_short(word)}" points at "{_short(target)}", which is not one of its allowed values.')
        if word.strip().lower() != word or not word:
            raise TaxonomyError(f'{label}: the synonym "{_short(word)}" must be written in lower case without spaces around it.')
        if word in folded:
            raise TaxonomyError(f'{label}: "{_short(word)}" is both an allowed value and a synonym.')
    if "required" in attribute and not isinstance(attribute["required"], bool):
        raise TaxonomyError(f'{label}: "required" must be true or false.')


def _check_word(label: str, kind: str, word: str) -> None:
    """An allowed value or synonym: one line of text, at most MAX_VALUE_CHARS characters."""
    if _has_control(word):
        raise TaxonomyError(f'{label}: the {kind} "{_shown(word)}" contains a control character (a tab, a line break or similar); '
                            f'values and synonyms are one line of text.')
    if len(word) > MAX_VALUE_CHARS:
        raise TaxonomyError(f'{label}: the {kind} "{_short(word)}" is {len(word)} characters; at most {MAX_VALUE_CHARS} are allowed.')


def _is_name(name: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9_]*", name) is not None and len(name) <= 40


def _short(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dump_taxonomy(schema: AttributeSchema) -> str:
    """The canonical JSON text of a taxonomy (what is stored, downloaded and diffed)."""
    return json.dumps(schema.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


# The store -----------------------------------------------------------------------------------------
def active_taxonomy(store: Any, default: AttributeSchema) -> tuple[int, AttributeSchema]:
    """(version, schema) that runs now: the store's active version, else version 0 (`default`)."""
    active = store.active_taxonomy()
    if active is None or active.version == 0:
        return 0, default
    return active.version, AttributeSchema.model_validate_json(active.document)


def save_taxonomy(store: Any, text: str | bytes, who: str, *, based_on: int) -> Any:
    """Validate `text` and store it as the next version (not active yet). `based_on` is the newest version
    the editor started from; StaleTaxonomyError when someone saved another version meanwhile."""
    schema = parse_taxonomy(text)
    return store.save_taxonomy(dump_taxonomy(schema), who, expected_latest=based_on)


def latest_version(store: Any) -> int:
    versions = store.taxonomy_versions()
    return versions[-1].version if versions else 0


def activate_taxonomy(store: Any, version: int, who: str) -> None:
    """Make `version` the one batches use from their next run (0: back to the configured default)."""
    if version != 0 and store.get_taxonomy(version) is None:
        raise TaxonomyError(f"There is no taxonomy version {version}.")
    store.activate_taxonomy(version, who)
    store.add_audit(who, "taxonomy_activate", "ok", f"version {version}")


def diff_taxonomies(old: AttributeSchema, new: AttributeSchema) -> list[str]:
    """Plain lines saying what `new` changes against `old` (attributes, values, synonyms, required, texts)."""
    lines: list[str] = []
    old_by, new_by = {s.name: s for s in old.attributes}, {s.name: s for s in new.attributes}
    for name in new_by.keys() - old_by.keys():
        lines.append(f"{name}: new attribute ({len(new_by[name].vocabulary)} values)")
    for name in old_by.keys() - new_by.keys():
        lines.append(f"{name}: removed")
    for name in [n for n in new_by if n in old_by]:
        a, b = old_by[name], new_by[name]
        added = [v for v in b.vocabulary if v not in a.vocabulary]
        removed = [v for v in a.vocabulary if v not in b.vocabulary]
        if added:
            lines.append(f"{name}: values added: {', '.join(added)}")
        if removed:
            lines.append(f"{name}: values removed: {', '.join(removed)}")
        for word in sorted(b.synonyms.keys() | a.synonyms.keys()):
            if a.synonyms.get(word) != b.synonyms.get(word):
                before, after = a.synonyms.get(word), b.synonyms.get(word)
                lines.append(f"{name}: synonym {word}: {before or '(none)'} → {after or '(none)'}")
        if a.required != b.required:
            lines.append(f"{name}: {'now required' if b.required else 'no longer required'}")
        for key in ("question", "prefix"):
            if getattr(a, key) != getattr(b, key):
                lines.append(f"{name}: {key}: {getattr(a, key)} → {getattr(b, key)}")
    for category in sorted(old.categories.keys() | new.categories.keys()):
        before, after = old.categories.get(category), new.categories.get(category)
        if before != after:
            lines.append(f"category {category}: " + (_rule_text(after) if after else "rule removed (every attribute applies)"))
    if [s.name for s in old.attributes if s.name in new_by] != [s.name for s in new.attributes if s.name in old_by]:
        lines.append("attribute order changed")
    return lines


def _rule_text(rule: Any) -> str:
    applies = "every attribute" if rule.attributes is None else ", ".join(rule.attributes) or "no attribute"
    return f"attributes: {applies}; required: {', '.join(rule.required) or 'none'}"


# The pipeline ---------------------------------------------------------------------------------------
def with_schema(summarizer: Any, schema: AttributeSchema) -> Any:
    """The same summarizer answering with `schema` (its structured output follows it)."""
    retarget = getattr(summarizer, "with_schema", None)
    return retarget(schema) if callable(retarget) else summarizer


def current_schema(stages: Any) -> AttributeSchema:
    """The schema a page or an export should use now: the active taxonomy (version 0: the configured default)."""
    return active_taxonomy(stages.store, stages.base_schema or stages.schema)[1]


def follow_active_taxonomy(stages: Any) -> Any:
    """`stages` for the taxonomy active now: a batch run calls this when it starts. The schema, the
    summarizer (and its Batch API twin) follow the active version; `taxonomy_version` is recorded per item."""
    base = stages.base_schema or stages.schema
    version, schema = active_taxonomy(stages.store, base)
    if version == stages.taxonomy_version and schema == stages.schema:
        return stages
    summarizer = with_schema(stages.summarizer, schema)
    later = stages.batch_summarizer
    if later is not None and getattr(later, "realtime", None) is stages.summarizer:
        later = copy.copy(later)
        later.realtime = summarizer
    return replace(stages, schema=schema, summarizer=summarizer, batch_summarizer=later, taxonomy_version=version, base_schema=base)
