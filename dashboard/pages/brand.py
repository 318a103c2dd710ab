"""Admin → Brand voice: the style guide sent with every summary request (tone, words to avoid, words to prefer).
pipeline.admin.brand checks the sizes and renders the prompt; the store keeps who saved it, when, and a version
(a save sends the version this page showed: a save made meanwhile by another admin is refused, not overwritten)."""

from __future__ import annotations

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_runtime, require_admin
from dashboard.text import say
from pipeline.admin.brand import LANGUAGES, MAX_TONE_CHARS, MAX_WORD_CHARS, MAX_WORDS_LISTED, StyleGuideConflict, clean_style_guide
from pipeline.errors import describe_error

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
store = runtime.stages.store

st.title("Brand voice")
st.caption(say("Sent with every summary request (real time and Batch API). An answer that uses a word to avoid is asked "
               "again once; if it still uses it, the item fails and says so. Summaries can also be written in: {langs}.",
               langs=", ".join(f"{name} ({code})" for code, name in LANGUAGES.items() if code != "en")))

try:
    guide = store.style_guide()
except Exception as error:  # the store unreachable: one sentence
    st.error(say("Could not read the style guide: {why}", why=describe_error(error)))
    st.stop()

if guide.version:
    st.caption(say("Version {version}, saved by {who} at {at}.", version=guide.version, who=guide.updated_by or "?",
                   at=guide.updated_at or "?"))
else:
    st.caption("No style guide saved yet: summaries follow the built-in instructions only.")

flash = st.session_state.pop("brand-flash", None)  # what the last save did, shown after the page re-read the guide
if flash is not None:
    (st.success if flash[0] == "ok" else st.error)(say("{text}", text=flash[1]))

# The version the fields were filled from: a save sends it. After another admin's save was found, the fields are
# refilled from the stored guide (a new round of widget keys) and that version is the one sent next.
shown_version = st.session_state.setdefault("brand-version", guide.version)
round_ = st.session_state.get("brand-round", 0)
with st.form("brand-form"):
    tone = st.text_area("Tone", value=guide.tone, max_chars=MAX_TONE_CHARS, key=f"brand-tone-{round_}",
                        help="How the copy should sound, e.g. warm and plain, no exclamation marks.")
    avoid = st.text_area("Words to avoid (one per line or comma separated)", value="\n".join(guide.avoid), key=f"brand-avoid-{round_}",
                         help=f"At most {MAX_WORDS_LISTED} entries of up to {MAX_WORD_CHARS} characters.")
    prefer = st.text_area("Words to prefer (one per line or comma separated)", value="\n".join(guide.prefer), key=f"brand-prefer-{round_}",
                          help=f"At most {MAX_WORDS_LISTED} entries of up to {MAX_WORD_CHARS} characters.")
    saved = st.form_submit_button("Save style guide", type="primary")

if saved:
    try:
        new = store.save_style_guide(clean_style_guide(tone, avoid, prefer), user.email, expected_version=int(shown_version))
    except StyleGuideConflict as conflict:  # someone saved meanwhile: show theirs, keep nothing of this attempt
        st.session_state["brand-flash"] = ("error", str(conflict))
        st.session_state["brand-version"] = store.style_guide().version
        st.session_state["brand-round"] = round_ + 1
        st.rerun()
    except Exception as error:  # a size limit or the store: one sentence, the typed text stays to be fixed
        st.error(say("{why}", why=describe_error(error)))
    else:
        st.session_state["brand-flash"] = ("ok", f"Saved as version {new.version}.")
        st.session_state["brand-version"] = new.version
        st.rerun()

if guide.avoid or guide.prefer:
    st.subheader("Current lists")
    st.dataframe({"Words to avoid": guide.avoid + [""] * max(0, len(guide.prefer) - len(guide.avoid)),
                  "Words to prefer": guide.prefer + [""] * max(0, len(guide.avoid) - len(guide.prefer))},
                 hide_index=True)  # cells are plain text
