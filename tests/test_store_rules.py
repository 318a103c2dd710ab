"""The stores' rules for edits, saves, leases, the audit log and the caption cache, one by one, on both stores
(written from mutants that survived tests/test_store_contract.py and tests/test_leases.py; docs/mutation.md)."""

from __future__ import annotations

import pytest

from pipeline.errors import BadInputError
from pipeline.models import (
    AttributeValue, CaptionResult, IngestReport, ItemResult, PhotoChecks, SourceItem, SourceRef, SummaryResult, Usage,
)
from pipeline.store import StaleEditError


def checks() -> PhotoChecks:
    return PhotoChecks(width=400, height=300, too_small=False, blur_score=120.5, blurry=False, brightness=130.0,
                       too_dark=False, too_bright=False, plain_background=True, white_background=True, dominant_colors=["red"])


def result(key: str = "k1", *, cached: bool = False, **summary) -> ItemResult:
    fields = dict(summary="A red shoe.", title="Red shoe", tags=["shoe", "red"], attributes={"color": "red"}, model="gpt-4o",
                  offline=False, summaries={"de": "Ein roter Schuh."}, seo_title="Red shoe | Acme",
                  meta_description="A red shoe.", alt_text="A red shoe on white")
    fields.update(summary)
    outcome = ItemResult(
        content_key=key, image_path=f"/images/{key}.jpg",
        caption=CaptionResult(caption="a red shoe", answers={"color": "red", "category": "shoes"}, model_id="blip", cached=cached),
        attributes=[AttributeValue(name="color", raw="red", value="red", in_vocab=True),
                    AttributeValue(name="pattern", raw="zigzag", value="", in_vocab=False)],
        summary=SummaryResult(**fields), checks=checks(), word_count=3, taxonomy_version=2,
    )
    outcome.phash, outcome.near_duplicate, outcome.reused_from = "00ff00ff00ff00ff", "looks like #1 of batch 1", None
    return outcome


def one_item(store, *, saved: bool = True):
    batch = store.create_batch("b", "ann", IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", "/p.jpg"))]))
    item = store.list_items(batch.id)[0]
    if saved:
        store.save_result(item.id, result(), [])
    return batch, store.get_item(item.id)


# --- what a save writes ----------------------------------------------------------------------------
def test_a_saved_result_keeps_every_field_and_frees_the_item(store):
    batch, item = one_item(store, saved=False)
    assert store.claim_item(item.id, "me", 120, version=item.version, now=1000.0)
    assert store.save_result(item.id, result(), [Usage(kind="llm", model="gpt-4o", input_tokens=5)], owner="me",
                             stage_ms={"caption": 12.5, "summarize": 3.0})
    saved = store.get_item(item.id)
    assert (saved.status, saved.error, saved.error_kind, saved.lease_owner, saved.version) == ("ok", None, None, None, 1)
    assert (saved.content_key, saved.image_path, saved.caption, saved.caption_model) == ("k1", "/images/k1.jpg", "a red shoe", "blip")
    assert (saved.title, saved.summary, saved.tags, saved.word_count) == ("Red shoe", "A red shoe.", ["shoe", "red"], 3)
    assert (saved.summary_model, saved.summary_offline, saved.taxonomy_version) == ("gpt-4o", False, 2)
    assert [(a.name, a.raw, a.value, a.in_vocab) for a in saved.attributes] == [("color", "red", "red", True), ("pattern", "zigzag", "", False)]
    assert saved.summaries == {"de": "Ein roter Schuh."} and saved.checks == checks()
    assert (saved.seo_title, saved.meta_description, saved.alt_text) == ("Red shoe | Acme", "A red shoe.", "A red shoe on white")
    assert (saved.phash, saved.near_duplicate, saved.reused_from) == ("00ff00ff00ff00ff", "looks like #1 of batch 1", None)
    assert saved.stage_ms == {"caption": 12.5, "summarize": 3.0} and saved.processed_at
    assert [(u.kind, u.input_tokens) for u in store.usage(batch.id)] == [("llm", 5)]
    cached = store.cached_caption("k1", "blip")
    assert (cached.caption, cached.answers, cached.model_id, cached.cached) == ("a red shoe", {"color": "red", "category": "shoes"}, "blip", True)


def test_a_result_from_the_cache_does_not_rewrite_the_cache(store):
    _, item = one_item(store, saved=False)
    store.save_result(item.id, result("k9", cached=True), [])
    assert store.cached_caption("k9", "blip") is None  # only answers the captioner gave are cached
    assert store.get_item(item.id).status == "ok"


def test_a_saved_error_clears_nothing_it_should_keep_and_names_its_kind(store):
    batch, item = one_item(store, saved=False)
    assert store.save_error(item.id, "The photo is empty.", [Usage(kind="endpoint", model="blip")], error_kind="input",
                            stage_ms={"fetch": 4.0})
    failed = store.get_item(item.id)
    assert (failed.status, failed.error, failed.error_kind, failed.stage_ms, failed.version) == ("error", "The photo is empty.", "input", {"fetch": 4.0}, 1)
    assert len(store.usage(batch.id)) == 1
    assert failed.processed_at and failed.updated_at == failed.processed_at  # when it failed (Review's "changed at")
    store.save_result(item.id, result(), [])
    assert (store.get_item(item.id).error, store.get_item(item.id).error_kind) == (None, None)  # a retry that worked


# --- edits ------------------------------------------------------------------------------------------
def test_tags_are_edited_from_a_list_or_comma_text_tidied(store):
    _, item = one_item(store)
    edit = store.edit_item(item.id, "tags", ["  trail ", "", "red"], "ann")
    assert (edit.old, edit.new, edit.field, edit.who) == ("shoe, red", "trail, red", "tags", "ann")
    store.edit_item(item.id, "tags", " a , ,b,", "ann")
    assert store.get_item(item.id).tags == ["a", "b"]
    store.edit_item(item.id, "tags", None, "ann")
    assert store.get_item(item.id).tags == []


def test_an_attribute_edit_is_a_persons_choice_and_may_add_an_attribute(store):
    _, item = one_item(store)
    edit = store.edit_item(item.id, "attribute:pattern", "  striped ", "ann")
    assert (edit.old, edit.new) == ("", "striped")
    pattern = store.get_item(item.id).attribute("pattern")
    assert (pattern.raw, pattern.value, pattern.in_vocab) == ("zigzag", "striped", True)  # chosen: no longer flagged
    added = store.edit_item(item.id, "attribute:style", "casual", "ann")
    assert (added.old, added.new) == ("", "casual")
    assert [(a.name, a.raw, a.value, a.in_vocab) for a in store.get_item(item.id).attributes] == [
        ("color", "red", "red", True), ("pattern", "zigzag", "striped", True), ("style", "", "casual", True)]  # no captioner answer
    store.edit_item(item.id, "attribute:color", None, "ann")
    assert store.get_item(item.id).attribute("color").value == ""


def test_a_language_summary_edit_is_tidied_and_held_to_its_languages_limit(store):
    _, item = one_item(store)
    assert store.edit_item(item.id, "summary:de", "  Ein   roter\nSchuh. ", "ann") is None  # the same text, tidied
    edit = store.edit_item(item.id, "summary:fr", "Une chaussure rouge.", "ann")
    assert (edit.old, edit.new) == (None, "Une chaussure rouge.")
    assert store.get_item(item.id).summaries == {"de": "Ein roter Schuh.", "fr": "Une chaussure rouge."}
    with pytest.raises(BadInputError) as words:
        store.edit_item(item.id, "summary:de", " ".join(["Wort"] * 51), "ann")
    assert str(words.value) == "The de summary has 51 words; the limit is 50 words. Shorten it and save again."
    with pytest.raises(BadInputError) as characters:
        store.edit_item(item.id, "summary:ja", "あ" * 126, "ann")
    assert str(characters.value) == "The ja summary has 126 characters; the limit is 125 characters. Shorten it and save again."
    assert store.edit_item(item.id, "summary:ja", "あ" * 125, "ann").new == "あ" * 125  # at the limit: kept


def test_an_seo_field_edit_is_tidied_and_refused_over_its_limit_never_cut(store):
    _, item = one_item(store)
    edit = store.edit_item(item.id, "seo_title", "  Red   shoe ", "ann")
    assert (edit.old, edit.new) == ("Red shoe | Acme", "Red shoe")
    with pytest.raises(BadInputError) as refused:
        store.edit_item(item.id, "meta_description", "x" * 161, "ann")
    assert str(refused.value) == "The meta description has 161 characters; the limit is 160. Shorten it and save again."
    assert store.get_item(item.id).meta_description == "A red shoe."
    with pytest.raises(BadInputError, match="alt text says 'buy'"):
        store.edit_item(item.id, "alt_text", "Buy this red shoe", "ann")
    assert store.edit_item(item.id, "alt_text", "A" * 125, "ann").new == "A" * 125


def test_an_seo_field_never_written_reads_as_empty_in_its_history(store):
    batch = store.create_batch("b", "ann", IngestReport(items=[SourceItem(source="p.jpg", ref=SourceRef("file", "/p.jpg"))]))
    item = store.list_items(batch.id)[0]
    assert store.edit_item(item.id, "alt_text", "A red shoe", "ann").old == ""


def test_the_summary_is_held_to_fifty_words_and_its_word_count_follows(store):
    _, item = one_item(store)
    fifty = " ".join(["word"] * 50)
    assert store.edit_item(item.id, "summary", f"  {fifty}  ", "ann").new == fifty
    assert store.get_item(item.id).word_count == 50
    with pytest.raises(BadInputError) as refused:
        store.edit_item(item.id, "summary", fifty + " more", "ann")
    assert str(refused.value) == "The summary has 51 words; the limit is 50. Shorten it and save again."
    store.edit_item(item.id, "summary", None, "ann")
    assert (store.get_item(item.id).summary, store.get_item(item.id).word_count) == (None, 0)


def test_review_status_takes_three_values_and_other_fields_are_not_editable(store):
    _, item = one_item(store)
    for status in ("approved", "rejected", "pending"):
        assert store.edit_item(item.id, "review_status", f" {status} ", "ann").new == status
    with pytest.raises(BadInputError) as refused:
        store.edit_item(item.id, "review_status", "done", "ann")
    assert str(refused.value) == "Review status must be pending, approved or rejected."
    with pytest.raises(ValueError) as not_editable:
        store.edit_item(item.id, "status", "ok", "ann")
    assert str(not_editable.value) == "status cannot be edited"
    with pytest.raises(KeyError) as missing:
        store.edit_item(10_000, "summary", "x", "ann")
    assert missing.value.args == (10_000,)


def test_an_edit_moves_the_version_on_and_says_who_and_when(store):
    _, item = one_item(store)
    edit = store.edit_item(item.id, "title", " Red trail shoe ", "ann", expected_version=item.version)
    now = store.get_item(item.id)
    assert (edit.item_id, edit.field, edit.who) == (item.id, "title", "ann")
    assert (edit.new, edit.version, now.version, now.updated_by, now.updated_at) == ("Red trail shoe", item.version + 1, item.version + 1, "ann", edit.at)
    with pytest.raises(StaleEditError) as stale:
        store.edit_item(item.id, "title", "Another", "bob", expected_version=item.version)
    assert (stale.value.item_id, stale.value.who, stale.value.at, stale.value.value, stale.value.current_version) == (
        item.id, "ann", edit.at, "Another", item.version + 1)  # Review keeps the value and the version it now has
    [kept] = store.edits(item.id)
    assert (kept.item_id, kept.field, kept.old, kept.new, kept.who, kept.at) == (item.id, "title", "Red shoe", "Red trail shoe", "ann", edit.at)


# --- leases --------------------------------------------------------------------------------------------------
def test_a_lease_lasts_until_its_end_inclusive_and_follows_the_items_version(store):
    _, item = one_item(store, saved=False)
    assert not store.claim_item(10_000, "a", 100, version=0, now=1000.0)  # no such item: nothing to hold
    assert not store.claim_item(item.id, "a", 100, version=item.version + 1, now=1000.0)  # changed since it was read
    assert store.claim_item(item.id, "a", 100, version=item.version, now=1000.0)
    assert store.get_item(item.id).lease_until == 1100.0
    assert not store.claim_item(item.id, "b", 100, version=item.version, now=1100.0)  # still a's at its last second
    assert store.claim_item(item.id, "a", 100, version=item.version, now=1050.0)  # its holder may claim again
    assert store.get_item(item.id).lease_until == 1150.0
    assert store.renew_items([item.id], "a", 30, now=1140.0) == [item.id] and store.get_item(item.id).lease_until == 1170.0
    assert store.renew_items([item.id], "b", 30, now=1140.0) == []
    store.release_item(item.id, "b")  # not b's to release
    assert store.get_item(item.id).lease_owner == "a"
    store.release_item(item.id, "a")
    assert (store.get_item(item.id).lease_owner, store.get_item(item.id).lease_until) == (None, None)


def test_a_batch_lease_names_its_host_and_lasts_until_its_end_inclusive(store):
    batch, _ = one_item(store, saved=False)
    run = store.claim_batch(batch.id, "task-9/1/x", 60, now=500.0)
    assert (run.owner, run.host, run.started_at, run.heartbeat_at, run.lease_until) == ("task-9/1/x", "task-9", 500.0, 500.0, 560.0)
    assert store.claim_batch(batch.id, "other/2/y", 60, now=560.0).owner == "task-9/1/x"
    assert store.claim_batch(batch.id, "other/2/y", 60, now=500.0, stale_owners=("task-9/1/x",)).owner == "other/2/y"
    with pytest.raises(KeyError) as missing:
        store.claim_batch(10_000, "x/1/z", 60, now=1.0)
    assert missing.value.args == (10_000,)


# --- audit log and cache --------------------------------------------------------------------------------------
def test_the_audit_log_keeps_each_entry_whole_newest_first_up_to_the_limit(store):
    first = store.add_audit("ann", "start", "ok", "ml.g4dn.xlarge")
    assert (first.who, first.action, first.result, first.detail) == ("ann", "start", "ok", "ml.g4dn.xlarge") and first.at
    store.add_audit("bob", "stop", "refused")
    for number in range(3):
        store.add_audit("carl", f"action {number}", "ok", "")
    log = store.audit_log()
    assert [e.action for e in log] == ["action 2", "action 1", "action 0", "stop", "start"]
    assert (log[-1].who, log[-1].result, log[-1].detail, log[-1].at) == ("ann", "ok", "ml.g4dn.xlarge", first.at)
    assert (log[-2].detail, log[-2].result) == ("", "refused")
    assert [e.action for e in store.audit_log(limit=2)] == ["action 2", "action 1"]


def test_the_caption_cache_is_per_photo_and_model(store):
    store.cache_caption("k1", CaptionResult(caption="a red shoe", answers={"color": "red"}, model_id="blip"))
    store.cache_caption("k1", CaptionResult(caption="a crimson shoe", answers={"color": "red"}, model_id="vision"))
    assert store.cached_caption("k1", "blip").caption == "a red shoe"
    assert store.cached_caption("k1", "blip").answers == {"color": "red"}  # the model's answers come back with the caption
    assert store.cached_caption("k1", "vision").caption == "a crimson shoe"
    assert store.cached_caption("k2", "blip") is None


def test_the_audit_log_shows_the_newest_200_entries_by_default(store):
    for number in range(201):
        store.add_audit("ann", f"action {number}", "ok")
    log = store.audit_log()
    assert len(log) == 200 and (log[0].action, log[-1].action) == ("action 200", "action 1")


def test_clearing_an_seo_field_or_a_language_summary_stores_it_empty(store):
    _, item = one_item(store)
    assert store.edit_item(item.id, "alt_text", None, "ann").new == ""
    assert store.edit_item(item.id, "summary:de", "", "ann").new == ""
    now = store.get_item(item.id)
    assert (now.alt_text, now.summaries) == ("", {"de": ""})


# --- taxonomy versions, the style guide, a batch's languages (issue 19: what admins save; both stores) ----------------
def test_taxonomy_versions_are_numbered_kept_whole_and_refuse_a_stale_save(store):
    from datetime import datetime

    from pipeline.errors import StaleTaxonomyError

    assert store.taxonomy_versions() == [] and store.active_taxonomy() is None and store.get_taxonomy(1) is None
    first = store.save_taxonomy('{"attributes": {"color": {}}}', "ann", expected_latest=0)
    second = store.save_taxonomy('{"attributes": {"size": {}}}', "bob", expected_latest=1)
    assert (first.version, first.document, first.created_by, first.active) == (1, '{"attributes": {"color": {}}}', "ann", False)
    assert (second.version, second.created_by) == (2, "bob")
    assert datetime.fromisoformat(second.created_at).utcoffset().total_seconds() == 0
    assert store.taxonomy_versions() == [first, second]  # oldest first, each as saved
    assert store.get_taxonomy(2) == second and store.get_taxonomy(3) is None
    with pytest.raises(StaleTaxonomyError) as stale:  # Ann started from version 1; Bob saved 2 meanwhile
        store.save_taxonomy('{"attributes": {}}', "ann", expected_latest=1)
    assert (stale.value.based_on, stale.value.latest) == (1, 2)
    assert str(stale.value) == (f"Version 2 was saved by bob at {second.created_at} after you started from version 1; "
                                "reload it and apply your changes again.")
    assert [v.version for v in store.taxonomy_versions()] == [1, 2]  # nothing written by the refused save


def test_one_taxonomy_version_is_active_and_says_who_activated_it(store):
    store.save_taxonomy("{}", "ann", expected_latest=0)
    store.save_taxonomy('{"v": 2}', "ann", expected_latest=1)
    store.activate_taxonomy(1, "carl")
    active = store.active_taxonomy()
    assert (active.version, active.document, active.active, active.activated_by) == (1, "{}", True, "carl") and active.activated_at
    assert [(v.version, v.active, v.activated_by) for v in store.taxonomy_versions()] == [(1, True, "carl"), (2, False, None)]
    assert store.get_taxonomy(2).activated_at is None and store.get_taxonomy(1).activated_at == active.activated_at
    store.activate_taxonomy(0, "dana")  # back to the shipped default, never stored
    default = store.active_taxonomy()
    assert (default.version, default.document, default.active, default.activated_by) == (0, "", True, "dana")
    assert (default.created_by, default.created_at) == ("", "") and default.activated_at >= active.activated_at  # when Dana did it
    assert not any(v.active for v in store.taxonomy_versions())
    with pytest.raises(ValueError, match="no taxonomy version 7"):
        store.activate_taxonomy(7, "dana")
    assert store.active_taxonomy().version == 0  # the refused activation changed nothing


def test_the_style_guide_is_saved_whole_by_version_and_a_stale_save_is_refused(store):
    from pipeline.errors import StyleGuideConflict
    from pipeline.models import StyleGuide

    assert store.style_guide() == StyleGuide()  # never saved: empty, version 0
    saved = store.save_style_guide(StyleGuide(tone="Warm, plain", avoid=["cheap", "Straße"], prefer=["handmade"]), "ann",
                                   expected_version=0)
    assert (saved.tone, saved.avoid, saved.prefer, saved.version, saved.updated_by) == \
        ("Warm, plain", ["cheap", "Straße"], ["handmade"], 1, "ann") and saved.updated_at
    assert store.style_guide() == saved
    again = store.save_style_guide(StyleGuide(tone="Crisp", avoid=[], prefer=["durable"]), "bob", expected_version=1)
    assert (again.tone, again.avoid, again.prefer, again.version, again.updated_by) == ("Crisp", [], ["durable"], 2, "bob")
    for stale_version in (1, 0):  # Ann's page still shows version 1; a second "first save"
        with pytest.raises(StyleGuideConflict) as conflict:
            store.save_style_guide(StyleGuide(tone="Loud"), "ann", expected_version=stale_version)
        assert (conflict.value.who, conflict.value.at) == ("bob", again.updated_at)
    assert store.style_guide() == again  # the refused saves changed nothing


def test_a_batchs_languages_and_near_duplicate_choice_are_kept_per_batch(store):
    first, _ = one_item(store, saved=False)
    second, _ = one_item(store, saved=False)
    assert store.batch_languages(first.id) == [] and store.reuse_near_duplicates(first.id) is False
    store.set_batch_languages(first.id, ("de", "ja"))
    store.set_batch_languages(second.id, ["fr"])
    store.set_batch_languages(second.id, ["fr", "es"])  # replaced, not added to
    assert (store.batch_languages(first.id), store.batch_languages(second.id)) == (["de", "ja"], ["fr", "es"])
    store.set_reuse_near_duplicates(first.id, True)
    assert (store.reuse_near_duplicates(first.id), store.reuse_near_duplicates(second.id)) == (True, False)
    store.set_reuse_near_duplicates(first.id, False)
    assert store.reuse_near_duplicates(first.id) is False


def test_two_admins_saving_the_next_taxonomy_version_at_once_keep_one_and_refuse_the_other(store):
    """Both read "no version yet" before either writes (a barrier holds each after its read): one save wins, the other is
    refused naming the winner, and exactly one version 1 is stored. DynamoDB: its conditional Put; SQLite: one transaction."""
    import threading

    from pipeline.errors import StaleTaxonomyError

    reads = threading.Barrier(2)
    if hasattr(store, "_latest_taxonomy"):  # DynamoDB reads the latest version before its conditional Put
        latest, seen = store._latest_taxonomy, []

        def read_then_wait():
            found = latest()
            seen.append(found)
            if len(seen) <= 2:
                reads.wait(timeout=10)
            return found

        store._latest_taxonomy = read_then_wait
    else:  # SQLite's check and insert are one write transaction: the second waits for the first to commit
        reads = None
    outcomes: dict[str, object] = {}

    def save(who: str) -> None:
        try:
            outcomes[who] = store.save_taxonomy(f'{{"by": "{who}"}}', who, expected_latest=0)
        except StaleTaxonomyError as refused:
            outcomes[who] = refused

    threads = [threading.Thread(target=save, args=(who,)) for who in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    [winner] = [who for who, outcome in outcomes.items() if not isinstance(outcome, StaleTaxonomyError)]
    [loser] = [who for who in outcomes if who != winner]
    stored = store.taxonomy_versions()
    assert [(v.version, v.created_by, v.document) for v in stored] == [(1, winner, f'{{"by": "{winner}"}}')]
    refused = outcomes[loser]
    assert (refused.based_on, refused.latest) == (0, 1)
    assert str(refused).startswith(f"Version 1 was saved by {winner} at {stored[0].created_at} after you started from version 0")


def test_the_first_taxonomy_save_after_choosing_the_default_is_version_1(store):
    store.activate_taxonomy(0, "ann")  # the default chosen before any version was saved
    first = store.save_taxonomy('{"attributes": {}}', "ann", expected_latest=0)
    assert first.version == 1 and [v.version for v in store.taxonomy_versions()] == [1]
    second = store.save_taxonomy('{"attributes": {"fit": {}}}', "bob", expected_latest=1)
    assert second.version == 2 and store.active_taxonomy().version == 0  # saving does not activate


# --- the cost ledger, Stop and OpenAI Batch API jobs, as kept -----------------------------------------
def test_every_usage_field_is_kept_for_the_batch_and_for_all_batches(store):
    batch, item = one_item(store)
    store.record_usage(item.id, [Usage(kind="llm", model="gpt-4o-2024-08-06", input_tokens=11, output_tokens=7,
                                       invocations=2, latency_ms=420.5)])
    kept = [(u.kind, u.model, u.input_tokens, u.output_tokens, u.invocations, u.latency_ms) for u in store.usage(batch.id)]
    assert kept == [("llm", "gpt-4o-2024-08-06", 11, 7, 2, 420.5)]
    assert [(u.kind, u.model, u.input_tokens, u.output_tokens, u.invocations, u.latency_ms) for u in store.usage()] == kept


def test_usage_for_an_item_that_is_gone_or_no_usage_records_nothing(store):
    batch, item = one_item(store)
    store.record_usage(item.id + 1000, [Usage(kind="llm", model="gpt-4o", input_tokens=5)])  # no such item
    store.record_usage(item.id, [])
    assert (store.usage(), store.last_usage_at("llm")) == ([], None)


def test_a_stop_request_keeps_who_asked_and_when(store):
    batch, _ = one_item(store)
    store.claim_batch(batch.id, "task-1/10/x", 120, now=1000.0)
    store.request_stop(batch.id, "bob", now=1060.0)
    run = store.get_batch(batch.id).run
    assert (run.owner, run.started_at, run.stop_requested_by, run.stop_requested_at) == ("task-1/10/x", 1000.0, "bob", 1060.0)


def test_a_person_cannot_save_a_title_over_the_feeds_limit_and_the_old_title_stays(store):
    from pipeline.wordlimit import MAX_TITLE_CHARACTERS

    _, item = one_item(store)
    with pytest.raises(BadInputError, match=f"The title has {MAX_TITLE_CHARACTERS + 1} characters; the limit is {MAX_TITLE_CHARACTERS}"):
        store.edit_item(item.id, "title", "x" * (MAX_TITLE_CHARACTERS + 1), "ann")
    assert store.get_item(item.id).title == "Red shoe" and store.edits(item.id) == []
    store.edit_item(item.id, "title", "x" * MAX_TITLE_CHARACTERS, "ann")
    assert store.get_item(item.id).title == "x" * MAX_TITLE_CHARACTERS


def test_the_newest_openai_batch_job_of_a_batch_is_pending_until_forgotten(store):
    from pipeline.models import OpenAIBatchRecord

    (a, _), (b, _) = one_item(store), one_item(store)
    older = OpenAIBatchRecord(batch_id=a.id, openai_batch_id="batch_1", input_file_id="file-1", submitted_at=100.0, requests=3)
    newer = OpenAIBatchRecord(batch_id=a.id, openai_batch_id="batch_2", input_file_id="file-2", submitted_at=200.5,
                              requests=2, status="validating")
    other = OpenAIBatchRecord(batch_id=b.id, openai_batch_id="batch_3", input_file_id="file-3", submitted_at=300.0, requests=1)
    assert store.pending_openai_batch(a.id) is None
    for record in (newer, older, other):  # stored out of order: the newest submission is the pending one
        store.remember_openai_batch(record)
    assert (store.pending_openai_batch(a.id), store.pending_openai_batch(b.id)) == (newer, other)
    store.forget_openai_batch(b.id, "batch_2")  # another batch's job: nothing forgotten
    assert store.pending_openai_batch(a.id) == newer
    store.forget_openai_batch(a.id, "batch_2")
    assert (store.pending_openai_batch(a.id), store.pending_openai_batch(b.id)) == (older, other)
    store.forget_openai_batch(a.id, "batch_1")
    assert store.pending_openai_batch(a.id) is None and store.pending_openai_batch(b.id) == other


def test_a_new_sqlite_store_creates_its_missing_folders(tmp_path):
    from pipeline.store.sqlite_store import SqliteStore

    store = SqliteStore(tmp_path / "data" / "nested" / "store.sqlite3")
    assert (tmp_path / "data" / "nested" / "store.sqlite3").is_file() and store.list_batches() == []


def test_a_transform_job_keeps_when_it_was_created_and_when_it_last_changed(store, monkeypatch):
    import sys

    from pipeline.models import TransformJobRecord

    batch, _ = one_item(store)
    clock = iter(["2026-12-02T10:00:00+00:00", "2026-12-02T10:05:00+00:00"])
    monkeypatch.setattr(sys.modules[type(store).__module__], "utc_now", lambda: next(clock))
    job = TransformJobRecord(batch_id=batch.id, job_name="job-1", status="InProgress", s3_prefix="s3://b/p/job-1/", total=3)
    store.save_transform_job(job)
    [first] = store.transform_jobs(batch.id)
    store.save_transform_job(TransformJobRecord(**{**job.__dict__, "status": "Completed", "done": 3}))
    [second] = store.transform_jobs(batch.id)
    assert (first.created_at, first.updated_at) == ("2026-12-02T10:00:00+00:00", "2026-12-02T10:00:00+00:00")
    assert (second.status, second.done, second.created_at, second.updated_at) == (
        "Completed", 3, "2026-12-02T10:00:00+00:00", "2026-12-02T10:05:00+00:00")


def test_a_near_duplicate_keeps_the_item_its_caption_was_reused_from(store):
    batch, item = one_item(store, saved=False)
    outcome = result()
    outcome.reused_from = "batch 1 #1"
    store.save_result(item.id, outcome, [])
    saved = store.get_item(item.id)
    assert (saved.phash, saved.near_duplicate, saved.reused_from) == ("00ff00ff00ff00ff", "looks like #1 of batch 1", "batch 1 #1")


# --- DynamoDB as it behaves in AWS: paged, throttled, eventually consistent, contended ----------------------------
@pytest.fixture
def dynamo():
    import boto3
    from moto import mock_aws

    from pipeline.store.dynamo_store import DynamoStore

    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "tagging-test")
        store.create_table()
        yield store


def test_the_table_the_store_creates_is_encrypted_at_rest(dynamo):
    described = dynamo.client.describe_table(TableName=dynamo.table)["Table"]
    assert described["SSEDescription"]["Status"] == "ENABLED"


def test_every_read_of_the_table_is_strongly_consistent(dynamo):
    """DynamoDB reads are eventually consistent unless asked: a runner could then re-read a lease or a version it
    has just written as it was before (moto is always consistent, so what is asked is what is checked)."""
    reads: list[tuple[str, dict]] = []

    def record(params, model, **_):
        reads.append((model.name, params))

    for operation in ("GetItem", "Query", "BatchGetItem"):
        dynamo.client.meta.events.register(f"provide-client-params.dynamodb.{operation}", record)
    batch, item = one_item(dynamo)
    dynamo.get_batch(batch.id), dynamo.list_items(batch.id), dynamo.get_item(item.id), dynamo.edits(item.id)
    dynamo.edit_item(item.id, "title", "Blue shoe", "ann")
    dynamo.edits_since("2000-01-01")
    base = [(name, params) for name, params in reads if "IndexName" not in params]
    assert {name for name, _ in base} == {"GetItem", "Query", "BatchGetItem"}
    for name, params in base:
        consistent = params["RequestItems"][dynamo.table]["ConsistentRead"] if name == "BatchGetItem" else params.get("ConsistentRead")
        assert consistent is True, (name, params)


def test_rows_dynamodb_leaves_unprocessed_are_read_again(dynamo):
    """BatchGetItem may answer only part of a request (UnprocessedKeys): the store asks again for the rest."""
    batch, _ = one_item(dynamo)
    for title in ("Blue shoe", "Green shoe", "Black shoe"):
        dynamo.edit_item(dynamo.list_items(batch.id)[0].id, "title", title, "ann")
    calls = []

    def answer_one_row_at_a_time(parsed, **_):
        calls.append(1)
        rows = parsed["Responses"][dynamo.table]
        if len(rows) > 1:  # keep the first row, send the rest back as unprocessed
            keys = [{"PK": row["PK"], "SK": row["SK"]} for row in rows[1:]]
            parsed["Responses"][dynamo.table] = rows[:1]
            parsed["UnprocessedKeys"] = {dynamo.table: {"Keys": keys, "ConsistentRead": True}}

    dynamo.client.meta.events.register("after-call.dynamodb.BatchGetItem", answer_one_row_at_a_time)
    edits = dynamo.edits_since("2000-01-01")
    assert [e.new for e in edits] == ["Blue shoe", "Green shoe", "Black shoe"] and len(calls) == 3


def test_a_big_batch_is_written_in_requests_dynamodb_accepts(dynamo):
    """AWS refuses a BatchWriteItem of more than 25 rows (moto does not: the test refuses it the way AWS does)."""
    from botocore.exceptions import ClientError

    def refuse_over_25(params, **_):
        rows = sum(len(requests) for requests in params["RequestItems"].values())
        if rows > 25:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "Too many items requested for the "
                                         "BatchWriteItem call"}}, "BatchWriteItem")

    dynamo.client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", refuse_over_25)
    items = [SourceItem(source=f"p{n}.jpg", ref=SourceRef("file", f"/p{n}.jpg")) for n in range(60)]
    batch = dynamo.create_batch("b", "ann", IngestReport(items=items))
    assert [item.source for item in dynamo.list_items(batch.id)] == [f"p{n}.jpg" for n in range(60)]
    assert dynamo.get_batch(batch.id).total == 60


def test_a_row_too_large_for_one_dynamodb_item_fails_alone_when_it_is_stored(dynamo):
    from pipeline.store.dynamo_store import DynamoStore

    small = DynamoStore(dynamo.client, dynamo.table, item_max_bytes=2_000)
    items = [SourceItem(source="a.jpg", ref=SourceRef("file", "/a.jpg"), hints={"notes": "x" * 3_000}),
             SourceItem(source="b.jpg", ref=SourceRef("file", "/b.jpg"))]
    batch = small.create_batch("b", "ann", IngestReport(items=items))
    big, fine = small.list_items(batch.id)
    assert (big.status, big.hints, big.processed_at is not None) == ("error", {}, True)
    assert big.error == ("This row's extra CSV columns are too large to store (3 KB; the limit is 2 KB). "
                         "Shorten them and upload the row again.")
    assert (fine.status, fine.processed_at, small.get_batch(batch.id).failed) == ("pending", None, 1)


def conflicting_writer(store, item_id: int, times: int):
    """Another writer that changes the item between each read and write of `store`, `times` times (a real write:
    the store's transaction then fails its version condition in moto)."""
    import boto3

    other = boto3.client("dynamodb", region_name="us-east-1")
    row = store._item_row(item_id)
    left = [times]

    def change_it_first(**_):
        if left[0] > 0:
            left[0] -= 1
            other.update_item(TableName=store.table, Key={"PK": {"S": row["PK"]}, "SK": {"S": row["SK"]}},
                              UpdateExpression="ADD version :one", ExpressionAttributeValues={":one": {"N": "1"}})

    store.client.meta.events.register("before-call.dynamodb.TransactWriteItems", change_it_first)
    return left


def test_a_save_that_loses_every_race_fails_in_one_sentence_and_writes_nothing(dynamo):
    from pipeline.errors import ServiceError

    batch, item = one_item(dynamo, saved=False)
    conflicting_writer(dynamo, item.id, times=100)
    with pytest.raises(ServiceError, match=r"^The database kept changing under this update; try again\.$"):
        dynamo.save_result(item.id, result(), [Usage(kind="llm", model="gpt-4o", input_tokens=5)])
    assert (dynamo.get_item(item.id).status, dynamo.usage(batch.id), dynamo.get_batch(batch.id).done) == ("pending", [], 0)


def test_a_save_that_loses_a_few_races_is_retried_and_counted_once(dynamo):
    batch, item = one_item(dynamo, saved=False)
    left = conflicting_writer(dynamo, item.id, times=3)
    assert dynamo.save_result(item.id, result(), [Usage(kind="llm", model="gpt-4o", input_tokens=5)])
    assert left == [0] and dynamo.get_item(item.id).status == "ok"
    assert (len(dynamo.usage(batch.id)), dynamo.get_batch(batch.id).done) == (1, 1)


def test_an_edit_that_loses_every_race_fails_in_one_sentence_and_keeps_the_item(dynamo):
    from pipeline.errors import ServiceError

    _, item = one_item(dynamo)
    conflicting_writer(dynamo, item.id, times=100)
    with pytest.raises(ServiceError, match=r"^Someone else kept changing this item; reload and try again\.$"):
        dynamo.edit_item(item.id, "title", "Blue shoe", "ann")
    assert dynamo.get_item(item.id).title == "Red shoe" and dynamo.edits(item.id) == []


def test_edits_saved_before_the_edit_index_are_indexed_once_page_by_page(dynamo):
    """Edit rows an older store wrote without their GSI1 entry are invisible to `edits_since` until backfilled; a row
    without a readable time is counted and left alone; a second run writes nothing (tests/test_analytics.py has the
    CLI, the Quality page and two machines at once)."""
    _, item = one_item(dynamo)
    for title in ("Blue shoe", "Green shoe", "Black shoe"):
        dynamo.edit_item(item.id, "title", title, "ann")
    client, table = dynamo.client, dynamo.table
    edit_rows = [r for r in client.scan(TableName=table)["Items"] if r["SK"]["S"].startswith("EDIT#")]
    for row in edit_rows:  # as an older version wrote them
        client.update_item(TableName=table, Key={"PK": row["PK"], "SK": row["SK"]}, UpdateExpression="REMOVE GSI1PK, GSI1SK")
    [timeless] = [r for r in edit_rows if r["new"]["S"] == "Blue shoe"]
    client.update_item(TableName=table, Key={"PK": timeless["PK"], "SK": timeless["SK"]}, UpdateExpression="REMOVE #at",
                       ExpressionAttributeNames={"#at": "at"})
    assert dynamo.edits_since("2000-01-01") == []
    rows_in_table = client.scan(TableName=table, Select="COUNT")["Count"]
    seen: list[tuple[int, int]] = []
    report = dynamo.backfill_edit_index(page_size=2, on_page=lambda r: seen.append((r.pages, r.indexed)))
    assert (report.indexed, report.no_time, report.done_elsewhere, report.rows_read) == (2, 1, 0, rows_in_table)
    assert report.pages == len(seen) >= 2 and [pages for pages, _ in seen] == list(range(1, report.pages + 1))
    assert seen[-1][1] == 2
    assert sorted(e.new for e in dynamo.edits_since("2000-01-01")) == ["Black shoe", "Green shoe"]
    again = dynamo.backfill_edit_index(page_size=500)
    assert (again.indexed, again.no_time, again.pages) == (0, 1, 1)
    assert dynamo.get_item(item.id).version == 4  # the item itself untouched: 1 save + 3 edits


def test_an_id_below_every_item_is_no_item(store):
    one_item(store)
    assert store.get_item(0) is None and store.get_item(-5) is None


def test_the_last_billable_call_time_never_moves_back(store, monkeypatch):
    """Two tasks record calls; the one whose clock is behind records last: the newest time stays (the Admin page's
    idle endpoint check reads it)."""
    import sys

    _, item = one_item(store)
    now = ["2026-12-02T10:05:00+00:00"]
    monkeypatch.setattr(sys.modules[type(store).__module__], "utc_now", lambda: now[0])
    store.record_usage(item.id, [Usage(kind="endpoint", model="blip2")])
    now[0] = "2026-12-02T10:01:00+00:00"
    store.record_usage(item.id, [Usage(kind="endpoint", model="blip2")])
    assert store.last_usage_at("endpoint") == "2026-12-02T10:05:00+00:00"


def test_the_near_duplicate_catalogue_lists_the_newest_tagged_photos_with_a_hash(store):
    two = [SourceItem(source=f"p{n}.jpg", ref=SourceRef("file", f"/p{n}.jpg")) for n in range(2)]
    batch = store.create_batch("b", "ann", IngestReport(items=two))
    untagged, first = store.list_items(batch.id)  # the first stays pending: no hash, not listed
    store.save_result(first.id, result(), [])
    other, second = one_item(store)
    assert batch.id != first.id and other.id != second.id  # batch and item ids that can be told apart
    catalogue = store.near_duplicate_catalogue(10)
    assert catalogue == [("00ff00ff00ff00ff", other.id, second.id, 0), ("00ff00ff00ff00ff", batch.id, first.id, 1)]
    assert len(store.near_duplicate_catalogue(1)) == 1


def test_two_backfills_at_once_index_each_edit_once(dynamo):
    """A second machine indexes the rows between this run's read and its writes: this run's conditional writes leave
    them (counted as done elsewhere)."""
    import boto3

    from pipeline.store.dynamo_store import DynamoStore

    _, item = one_item(dynamo)
    dynamo.edit_item(item.id, "title", "Blue shoe", "ann")
    client, table = dynamo.client, dynamo.table
    for row in [r for r in client.scan(TableName=table)["Items"] if r["SK"]["S"].startswith("EDIT#")]:
        client.update_item(TableName=table, Key={"PK": row["PK"], "SK": row["SK"]}, UpdateExpression="REMOVE GSI1PK, GSI1SK")
    other = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), table)
    theirs = []

    def the_other_machine_goes_first(**_):
        if not theirs:
            theirs.append(other.backfill_edit_index())

    client.meta.events.register("before-call.dynamodb.UpdateItem", the_other_machine_goes_first)
    mine = dynamo.backfill_edit_index()
    assert (theirs[0].indexed, mine.indexed, mine.done_elsewhere) == (1, 0, 1)
    assert [e.new for e in dynamo.edits_since("2000-01-01")] == ["Blue shoe"]


def test_a_batch_keeps_when_and_by_whom_it_was_made_and_an_empty_one_counts_nothing(store):
    empty = store.create_batch("nothing usable", "ann", IngestReport(items=[], notices=["No photo or image column found."]))
    kept = store.get_batch(empty.id)
    assert (kept.name, kept.created_by, kept.total, kept.done, kept.failed) == ("nothing usable", "ann", 0, 0, 0)
    assert kept.created_at and kept.created_at.startswith("20") and kept.notices == ["No photo or image column found."]


def test_a_row_refused_at_upload_is_a_failed_item_with_the_time_it_was_decided(store):
    items = [SourceItem(source="bad.csv row 2", ref=None, error="This row has no photo."), SourceItem(source="p.jpg", ref=SourceRef("file", "/p.jpg"))]
    batch = store.create_batch("b", "ann", IngestReport(items=items))
    refused, fine = store.list_items(batch.id)
    assert (refused.status, refused.error, refused.processed_at is not None) == ("error", "This row has no photo.", True)
    assert (fine.status, fine.processed_at) == ("pending", None)
    assert store.get_batch(batch.id).failed == 1


def test_an_item_an_older_version_left_running_is_processed_by_every_run(store):
    """Before leases a runner marked its item 'running'; a database from then may still hold one whose process died."""
    batch, item = one_item(store, saved=False)
    if hasattr(store, "client"):  # DynamoDB
        row = store._item_row(item.id)
        store.client.update_item(TableName=store.table, Key={"PK": {"S": row["PK"]}, "SK": {"S": row["SK"]}},
                                 UpdateExpression="SET #s = :r", ExpressionAttributeNames={"#s": "status"},
                                 ExpressionAttributeValues={":r": {"S": "running"}})
    else:
        store._connection().execute("UPDATE items SET status = 'running' WHERE id = ?", (item.id,))
    assert store.get_item(item.id).status == "running"
    assert [i.id for i in store.items_to_process(batch.id)] == [item.id]
    assert [i.id for i in store.items_to_process(batch.id, retry_failed=True)] == [item.id]
