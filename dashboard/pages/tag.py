"""Tag: upload photos / a CSV / a zip, check what will run, run it, watch progress, see results."""

from __future__ import annotations

import streamlit as st

from dashboard.components import cached_thumbnail, choose_batch
from dashboard.runtime import current_user, get_runtime
from dashboard.text import inert
from pipeline.admin.taxonomy import current_schema
from pipeline.batches.batch_transform import job_estimate, use_job_by_default
from pipeline.captioners import photo_by_photo_problem
from pipeline.ingest.sources import collect_sources, stage_sources
from pipeline.images.normalize import IMAGE_EXTENSIONS
from pipeline.batches.review import item_label, photo_warnings
from pipeline.batches.worker import BatchView
from pipeline.batches.export import result_label
from pipeline.service import ingest_limits
from pipeline.store import BatchBusyError
from pipeline.ingest.uploads import save_uploads
from pipeline.images.staging_hashes import near_duplicate_notices as staged_near_duplicates

runtime = get_runtime()
user = current_user(runtime)
store, worker, images = runtime.stages.store, runtime.worker, runtime.stages.images
schema = current_schema(runtime.stages)  # results show the active taxonomy's attributes
JOB_STATES = {"InProgress": "running in AWS", "Completed": "finished, saving results", "Failed": "failed part way",
              "Stopped": "stopped", "Ingested": "done", "Summarizing": "captioned, summaries at OpenAI's Batch API (within 24 h)"}
UPLOAD_TYPES = sorted({ext.lstrip(".") for ext in IMAGE_EXTENSIONS} | {"zip", "csv"})
THUMBNAIL_TTL_S = max(1, min(300, runtime.settings.presign_expiry_s // 2))  # as the Review page
NO_PHOTO_BY_PHOTO = photo_by_photo_problem(runtime.settings)  # ENDPOINT_ENABLED=false with a SageMaker captioner: jobs only


def stage_uploads(files) -> dict:
    """Save the uploads once per distinct selection, read what they contain and check it (each photo's
    header, each URL's address), so every item that would certainly fail is listed now. Nothing runs
    and nothing is recorded yet."""
    key = tuple(sorted(f.file_id for f in files))
    staged = st.session_state.get("staged")
    if staged is None or staged["key"] != key:
        paths = save_uploads(((f.name, f.getbuffer()) for f in files), runtime.settings.data_dir / "uploads")
        for path in paths:
            images.keep_upload(path)  # more than one task: any task can resume this batch
        with st.spinner("Checking the files…"):
            report = stage_sources(collect_sources(paths, ingest_limits(runtime.settings)),
                                   allow_private_urls=runtime.settings.allow_private_urls)
        with st.spinner("Comparing the photos…"):
            near = near_duplicate_notices(report)
        staged = {"key": key, "report": report, "near": near,
                  "default_name": files[0].name if len(files) == 1 else f"{files[0].name} and {len(files) - 1} more"}
        st.session_state["staged"] = staged
    return staged


def near_duplicate_notices(report) -> list[str]:
    """Issue 19: which staged photos look alike, and which look like photos tagged before (plain sentences; the
    CLI prints the same, pipeline/images/staging_hashes.py)."""
    settings = runtime.settings
    return staged_near_duplicates(store, report, max_distance=settings.near_duplicate_max_distance,
                                  catalogue_max=settings.near_duplicate_catalogue_max)


def render_upload() -> None:
    files = st.file_uploader("Product photos, a CSV of products, or a zip", type=UPLOAD_TYPES, accept_multiple_files=True,
                             key=f"uploads-{st.session_state.get('upload_round', 0)}", help=upload_limits())
    if not files:
        return
    staged = stage_uploads(files)
    report = staged["report"]
    ready = [item for item in report.items if not item.error]
    rejected = [item for item in report.items if item.error]
    left, right = st.columns(2)
    left.metric("Ready to tag", len(ready))
    right.metric("Rejected", len(rejected))
    if rejected:
        st.dataframe([{"File": item.source, "Why": item.error} for item in rejected], hide_index=True, width="stretch")
    for notice in report.notices:
        st.info(inert(notice))  # names files, SKUs, manifest problems
    for notice in staged.get("near", []):
        st.info(inert(notice), icon=":material/content_copy:")  # near-duplicate photos (issue 19): names files
    name = st.text_input("Batch name", value=staged["default_name"])
    as_job = choose_run_mode(len(ready))
    runnable = bool(ready) and (as_job or NO_PHOTO_BY_PHOTO is None)  # no endpoint and no jobs: nothing can caption them
    cheapest = choose_cheapest(len(ready), as_job)
    languages = choose_languages()
    reuse = st.checkbox("Reuse captions of near-duplicates", value=runtime.settings.reuse_near_duplicates, key="reuse-near",
                        help="A photo that looks like one already tagged gets that item's caption and attributes instead of a new "
                             "caption (no caption cost); its summary is still written for its own SKU. Review says where it came from.")
    if st.button("Run", type="primary", disabled=not runnable):
        batch = store.create_batch(name.strip() or staged["default_name"], user.email, report)
        if languages:
            store.set_batch_languages(batch.id, languages)  # before the worker starts: every summary request carries them
        store.set_reuse_near_duplicates(batch.id, reuse)  # issue 19: before the worker starts
        worker.submit(batch.id, as_job=as_job, cheapest=cheapest)
        st.session_state["batch_id"] = batch.id
        st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1  # clears the uploader
        st.session_state.pop("staged", None)
        st.rerun()


def choose_run_mode(photos: int) -> bool:
    """Photo by photo, or one batch transform job (offered when this deployment has them). Without the SageMaker
    endpoint (ENDPOINT_ENABLED=false, a SageMaker captioner) only the job is offered, or nothing when jobs are not set up."""
    if NO_PHOTO_BY_PHOTO is not None:
        if worker.transform is None:
            st.error(inert(f"{NO_PHOTO_BY_PHOTO}, and batch jobs need SAGEMAKER_TRANSFORM_S3, which is not set: "
                           "nothing can caption these photos until an admin sets it."))
            return False
        if not photos:
            return True
        st.caption(inert(f"{NO_PHOTO_BY_PHOTO}: every batch runs as a batch job, with results at the end."))
        show_job_estimate(photos)
        return True
    if worker.transform is None or not photos:
        return False
    modes = ["Photo by photo", "Batch job"]
    default = 1 if use_job_by_default(runtime.settings, photos) else 0
    mode = st.radio("How to run", modes, index=default, horizontal=True, key="run-mode",
                    help="A batch job starts its own GPU machine for this batch and stops it when done: "
                         "cheapest for large batches, but results appear only at the end.")
    show_job_estimate(photos)
    return mode == "Batch job"


def show_job_estimate(photos: int) -> None:
    estimate = job_estimate(runtime.settings, photos)
    st.caption(f"Batch job estimate: about {estimate.minutes:g} min and ${estimate.usd:,.2f} on "
               f"{estimate.instance_count} × {estimate.instance_type} (list prices; see the Admin page for sources).")


def choose_cheapest(photos: int, as_job: bool) -> bool:
    """Summaries through OpenAI's Batch API (offered with OpenAI summaries; a batch job uses it anyway)."""
    later = runtime.stages.batch_summarizer
    if later is None or as_job or not photos:
        return False
    return st.checkbox("Cheapest: summaries within 24 h", key="cheapest",
                       help=f"Captions as usual; the summaries then go to OpenAI's Batch API at half the price and "
                            f"arrive within 24 hours, usually far sooner (batches of {later.min_items} photos or more).")


def choose_languages() -> tuple[str, ...]:
    """Extra summary languages (issue 19): offered with OpenAI summaries; the offline template writes English only."""
    from pipeline.admin.brand import LANGUAGES

    if getattr(runtime.stages.summarizer, "name", None) == "offline":
        st.caption("Summaries in English only: the offline summarizer does not translate (SUMMARIZER=openai writes other languages).")
        return ()
    codes = [code for code in LANGUAGES if code != "en"]
    chosen = st.multiselect("Also summarize in", codes, format_func=lambda code: f"{LANGUAGES[code]} ({code})", key="languages",
                            help="English is always written; each language adds one summary per photo, held to the word limit "
                                 "(Japanese and Chinese: a character budget).")
    return tuple(chosen)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"about {minutes} min {secs:02d} s" if minutes else f"about {secs} s"


def render_progress(view: BatchView) -> None:
    """Progress as the store has it: it survives reloads because the worker owns the run."""
    batch, batch_id = view.batch, view.batch.id
    st.progress(view.fraction, text=f"{batch.done} of {batch.total} done · {batch.failed} failed · {view.state}"
                + (f" · {format_eta(view.eta_s)} left" if view.state == "running" else ""))
    if view.notice:
        st.info(inert(view.notice))
    if view.job is not None:
        job = view.job
        st.caption(f"Batch job {job.job_name}: {JOB_STATES.get(job.status, job.status)}, "
                   f"{job.done} of {job.total} photos captioned so far.")
    if view.problem:
        st.warning(inert(view.problem))  # describe_error text: may name files
    if view.where:  # run by another task or the CLI, as the store says
        st.caption(f"Batch {batch.id} is {view.where}.")
    if view.state == "stopped" and st.button("Resume", key=f"resume-{batch_id}"):
        try:
            worker.submit(batch_id, as_job=worker.transform is not None and NO_PHOTO_BY_PHOTO is not None)
        except BatchBusyError as busy:  # started elsewhere meanwhile: say so, start nothing
            st.warning(inert(str(busy)))
        else:
            st.rerun()  # a whole-page rerun: a stopped batch is drawn outside the progress fragment
    if view.state in ("finished", "stopped") and batch.failed and st.button(f"Retry failed ({batch.failed})", key=f"retry-{batch_id}"):
        try:
            worker.submit(batch_id, retry_failed=True, as_job=worker.transform is not None and (
                NO_PHOTO_BY_PHOTO is not None or use_job_by_default(runtime.settings, batch.failed)))
        except BatchBusyError as busy:
            st.warning(inert(str(busy)))
        else:
            st.rerun()
    if view.state in ("running", "queued") and st.button("Stop", key=f"stop-{batch_id}"):
        worker.stop(batch_id, user.email)  # this batch only, wherever it runs


def render_live(batch_id: int) -> None:
    """While the batch runs (a fragment, every 2 s): its progress and the results so far. The whole page is
    not rerun as items finish: a page rerun requested while a click on another page in the sidebar waits is
    merged with it, and Streamlit keeps the later request's page, so the click was lost; it also redrew the
    uploader every 2 s."""
    view = worker.view(batch_id)
    if view is None or view.state not in ("running", "queued"):
        # Once, when it finishes or stops, and before drawing anything: the page draws it outside the fragment
        # (Resume, Retry failed), and a click can only be lost in the moment this one store read takes.
        st.rerun()
    render_progress(view)
    render_results(batch_id)


def upload_limits() -> str:
    """The uploader's own "Limit … per file" is the whole upload (a zip or CSV counts as one file); say both limits."""
    per_upload = st.get_option("server.maxUploadSize")
    per_photo = runtime.settings.max_file_bytes / (1024 * 1024)
    return (f"Up to {per_upload:g} MB per upload, {per_photo:g} MB per photo. "
            "Bigger batches: a CSV of photo URLs, or the command line.")


def render_results(batch_id: int) -> None:
    items = store.list_items(batch_id)
    finished = [item for item in items if item.status in ("ok", "error")]
    if not finished:
        return
    size = runtime.settings.results_page_size
    pages = max(1, -(-len(finished) // size))
    page = st.number_input("Results page", 1, pages, 1, key=f"page-{batch_id}") if pages > 1 else 1
    rows = []
    for item in finished[(page - 1) * size: page * size]:
        row = {
            "Photo": cached_thumbnail(images, item.image_path, THUMBNAIL_TTL_S) or "",  # a failed row: empty, not "None"
            "Item": item_label(item),
            "Result": result_label(item),  # tagged / failed: <why>, the words every page uses
            "Caption": item.caption or "",
        }
        for name in schema.names():
            attribute = item.attribute(name)
            row[name] = attribute.value if attribute else ""
        row.update({
            "Tags": ", ".join(item.tags), "Summary": item.summary or "", "Words": item.word_count,
            "Photo checks": "; ".join(photo_warnings(item)),  # photo checks + near-duplicate notes (issue 19)
        })
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"Photo": st.column_config.ImageColumn("Photo", width="small"),
                                "Result": st.column_config.TextColumn("Result", width="large", help="tagged, or failed with the reason")})


st.title("Tag photos")
render_upload()
st.divider()
batch_id = choose_batch(store, lambda b: f"{b.name} (#{b.id}, {b.done}/{b.total} done)", "No batches yet.")
if batch_id is not None:
    view = worker.view(batch_id)
    if view is not None and view.state in ("running", "queued"):
        st.fragment(render_live, run_every=2.0)(batch_id)  # re-read every 2 s only while it runs
    elif view is not None:
        render_progress(view)
        render_results(batch_id)
