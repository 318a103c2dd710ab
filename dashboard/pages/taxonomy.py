"""Admin → Taxonomy: the attribute taxonomy (attributes, allowed values, synonyms, required) as versions.
Edit one attribute or the whole document as JSON, save it as a new version, activate a version, download
or upload JSON, and see what a draft changes against the active version (pipeline.admin.taxonomy does the
work; this page only asks and draws)."""

from __future__ import annotations

import json

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_runtime, require_admin
from dashboard.text import say
from pipeline.admin.taxonomy import (
    StaleTaxonomyError, TaxonomyError, activate_taxonomy, active_taxonomy, diff_taxonomies, dump_taxonomy, latest_version,
    load_json, parse_taxonomy, save_taxonomy,
)
from pipeline.attributes import AttributeSchema
from pipeline.errors import describe_error

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
stages = runtime.stages
store = stages.store
default = stages.base_schema or stages.schema  # version 0: ATTRIBUTE_SCHEMA or the shipped file
WHOLE = "(whole taxonomy)"
CATEGORIES = "(per-category rules)"

st.title("Attribute taxonomy")
try:
    versions = store.taxonomy_versions()
    active_version, active_schema = active_taxonomy(store, default)
except Exception as error:  # the store unreachable: one sentence
    st.error(say("Could not read the store: {why}", why=describe_error(error)))
    st.stop()
latest = versions[-1].version if versions else 0
st.session_state.setdefault("taxonomy-based-on", latest)  # the newest version when this editor was opened
st.caption(say("Active: version {version}{note}. Batches use the active version from their next run; each item records the version it "
               "was tagged with.", version=active_version, note=" (the default)" if active_version == 0 else ""))


def schema_of(version: int) -> AttributeSchema:
    if version == 0:
        return default
    found = next(v for v in versions if v.version == version)
    return AttributeSchema.model_validate_json(found.document)


def flash(kind: str, message: str) -> None:
    st.session_state["taxonomy-flash"] = (kind, message)


def reload_editor() -> None:
    st.session_state["taxonomy-based-on"] = latest_version(store)
    st.session_state["taxonomy-editor"] = st.session_state.get("taxonomy-editor", 0) + 1  # fresh text areas


kind_message = st.session_state.pop("taxonomy-flash", None)
if kind_message:
    getattr(st, kind_message[0])(say("{message}", message=kind_message[1]))

st.dataframe([{"Version": 0, "Saved by": "(default)", "Saved at (UTC)": "", "Active": active_version == 0}]
             + [{"Version": v.version, "Saved by": v.created_by, "Saved at (UTC)": v.created_at, "Active": v.active} for v in versions],
             hide_index=True, width="stretch")  # cells are plain text

st.subheader("Edit")
choices = [0, *[v.version for v in versions]]
start = st.selectbox("Start from version", choices, index=len(choices) - 1, key="taxonomy-start")
base = schema_of(int(start))
names = [WHOLE, *base.names(), CATEGORIES]
part = st.selectbox("Attribute", names, key="taxonomy-part", help="Edit one attribute's JSON, or the whole taxonomy")
document = base.model_dump(mode="json")
shown = (document if part == WHOLE else document["categories"] if part == CATEGORIES
         else next(a for a in document["attributes"] if a["name"] == part))
editor = st.session_state.get("taxonomy-editor", 0)
text = st.text_area("JSON", value=json.dumps(shown, indent=2, ensure_ascii=False), height=360,
                    key=f"taxonomy-text-{editor}-{start}-{part}",
                    help='Attribute keys: name, question, prefix, vocabulary (allowed values), synonyms ("word": "allowed value"), required. '
                         'Per-category rules: {"mug": {"attributes": ["color", "material"], "required": ["color"]}}')


def draft_text() -> str:
    """The whole taxonomy with the edited part in place (raises TaxonomyError when the part is not JSON)."""
    if part == WHOLE:
        return text
    edited = load_json(text, "The attribute")  # one sentence when not JSON or nested too deeply
    if part == CATEGORIES:
        return json.dumps({**document, "categories": edited}, ensure_ascii=False)
    attributes = [edited if a["name"] == part else a for a in document["attributes"]]
    return json.dumps({**document, "attributes": attributes}, ensure_ascii=False)


try:
    draft = parse_taxonomy(draft_text())
    problem = None
except TaxonomyError as error:
    draft, problem = None, str(error)

if problem:
    st.error(say("{problem}", problem=problem))
else:
    changes = diff_taxonomies(active_schema, draft)
    with st.expander(f"Changes against the active version ({len(changes)})", expanded=bool(changes)):
        if changes:
            st.code("\n".join(changes), language=None)  # a code block: the text exactly as written
        else:
            st.caption("No changes: this draft is the active version.")

save, reload = st.columns(2)
if save.button("Save as new version", type="primary", disabled=draft is None, key="taxonomy-save"):
    try:
        saved = save_taxonomy(store, dump_taxonomy(draft), user.email, based_on=st.session_state["taxonomy-based-on"])
        store.add_audit(user.email, "taxonomy_save", "ok", f"version {saved.version}")
        st.session_state["taxonomy-based-on"] = saved.version
        flash("success", f"Saved as version {saved.version}. It is not active yet: activate it below.")
        st.rerun()
    except StaleTaxonomyError as error:
        st.error(say("{why}", why=str(error)))
    except Exception as error:
        st.error(say("Could not save: {why}", why=describe_error(error)))
reload.button("Reload the newest version", key="taxonomy-reload", on_click=reload_editor,
              help="After another admin saved: start again from the newest version")

st.subheader("Activate")
pick = st.selectbox("Version to activate", choices, index=len(choices) - 1, key="taxonomy-activate-pick")
if st.button("Activate", key="taxonomy-activate", disabled=int(pick) == active_version):
    try:
        activate_taxonomy(store, int(pick), user.email)
        flash("success", f"Version {pick} is active: batches use it from their next run.")
        st.rerun()
    except Exception as error:
        st.error(say("Could not activate: {why}", why=describe_error(error)))

st.subheader("Download / upload")
download = st.selectbox("Version to download", choices, index=choices.index(active_version), key="taxonomy-download-pick")
st.download_button("Download JSON", dump_taxonomy(schema_of(int(download))).encode("utf-8"),
                   file_name=f"taxonomy-v{download}.json", mime="application/json", key="taxonomy-download")
upload = st.file_uploader("Upload a taxonomy (JSON)", type=["json"], key="taxonomy-upload")
if upload is not None:
    try:
        uploaded = parse_taxonomy(upload.getvalue())
    except TaxonomyError as error:
        st.error(say("The upload cannot be used: {why}", why=str(error)))
    else:
        st.code("\n".join(diff_taxonomies(active_schema, uploaded)) or "No changes against the active version.", language=None)
        if st.button("Save the upload as a new version", key="taxonomy-save-upload"):
            try:
                saved = save_taxonomy(store, dump_taxonomy(uploaded), user.email, based_on=st.session_state["taxonomy-based-on"])
                store.add_audit(user.email, "taxonomy_save", "ok", f"version {saved.version} (upload)")
                st.session_state["taxonomy-based-on"] = saved.version
                flash("success", f"Saved the upload as version {saved.version}. It is not active yet: activate it above.")
                st.rerun()
            except StaleTaxonomyError as error:
                st.error(say("{why}", why=str(error)))
            except Exception as error:
                st.error(say("Could not save: {why}", why=describe_error(error)))
