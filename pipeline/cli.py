"""Command line: `python -m pipeline tag ...`, `export BATCH_ID ...` and `make-test-model DIR`.

Thin on purpose: parse arguments, call the library, print one line per outcome. No tracebacks:
fatal problems print one `error:` line and exit 2; per-item failures are rows in the report.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from pipeline.errors import UserFacingError
from pipeline.terminal import one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Tag product photos: caption, attributes, summary.")
    commands = parser.add_subparsers(dest="command", required=True)

    tag = commands.add_parser("tag", help="tag images, zips and CSVs and write a CSV report")
    tag.add_argument("paths", nargs="*", type=Path, help="images, .zip archives or .csv files")
    tag.add_argument("--out", type=Path, required=True, help="where to write the CSV report")
    tag.add_argument("--captioner", choices=["local", "sagemaker", "sagemaker-async", "openai-vision"])
    tag.add_argument("--job", choices=["auto", "always", "never"], default="auto",
                     help="run as a SageMaker batch transform job: auto = when the batch has TRANSFORM_THRESHOLD photos or more")
    tag.add_argument("--summarizer", choices=["openai", "offline"])
    tag.add_argument("--cheapest", action="store_true",
                     help="summaries through OpenAI's Batch API: half the price, within 24 h (OPENAI_BATCH_MIN_ITEMS items or more)")
    tag.add_argument("--languages", default="",
                     help="summary languages, e.g. en,de,ja: English always, one more summary per other language (SUMMARIZER=openai)")
    tag.add_argument("--reuse-near-duplicates", action=argparse.BooleanOptionalAction, default=None,
                     help="copy the caption and attributes of an already tagged near-duplicate photo instead of captioning it "
                          "again (default: REUSE_NEAR_DUPLICATES, off)")
    tag.add_argument("--concurrency", type=int)
    tag.add_argument("--name", help="batch name (default: the first file's name)")
    tag.add_argument("--resume", type=int, metavar="BATCH_ID", help="finish an earlier batch instead of starting one")
    tag.add_argument("--retry-failed", action="store_true", help="with --resume: also redo items that failed")
    tag.add_argument("--excel", action="store_true", help="write a UTF-8 BOM so Excel opens the report correctly")

    endpoint = commands.add_parser("endpoint", help="status / start / stop / autostop the captioning endpoint")
    endpoint.add_argument("action", choices=["status", "start", "stop", "autostop"])
    endpoint.add_argument("--idle-minutes", type=float, help="autostop: stop after this long without invocations (default AUTOSTOP_IDLE_MINUTES)")
    endpoint.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # a local fake AWS, for tests

    estimate = commands.add_parser("estimate", help="monthly cost of each deployment scenario")
    estimate.add_argument("--images-per-month", type=int, required=True)
    estimate.add_argument("--working-days", type=int)
    estimate.add_argument("--hours-per-day", type=float)
    estimate.add_argument("--batches-per-month", type=int)
    estimate.add_argument("--summary-model", choices=["gpt-4o", "gpt-4o-mini"])
    estimate.add_argument("--max-latency-s", type=float, help="also name the cheapest scenario that answers within this")
    estimate.add_argument("--profile", choices=["own-alb", "own-alb-business-hours", "own-alb-ipv6-business-hours", "shared-alb-business-hours", "own-alb-ipv6-batch"],
                          help="deployment profile whose always-on part is priced (default: DEPLOYMENT_PROFILE, own-alb)")
    estimate.add_argument("--summary-mode", choices=["auto", "realtime", "batch"],
                          help="auto (default): batch transform sends summaries through the OpenAI Batch API at half price; "
                               "realtime: none does; batch: every scenario does (answers within 24 h)")
    estimate.add_argument("--languages", type=int, dest="extra_languages", metavar="N",
                          help="summaries in N languages besides English (tag --languages): N more summaries per photo")
    estimate.add_argument("--seo-fields-by", choices=["template", "model"],
                          help="who writes SEO title / meta description / alt text (default: SEO_FIELDS_BY, template): "
                               "model adds about 199 input and 102 output tokens per photo")
    estimate.add_argument("--json", action="store_true", help="print JSON: {assumptions, scenarios: [{name, monthly_usd, breakdown}]}")

    export = commands.add_parser("export", help="write a batch as the CSV report, a Shopify / WooCommerce CSV or a Google Merchant feed")
    export.add_argument("batch_id", type=int, metavar="BATCH_ID")
    export.add_argument("--format", dest="export_format", choices=["report", "shopify", "google-merchant", "woocommerce"], default="report")
    export.add_argument("--out", required=True, help="file to write; - writes to standard output")
    export.add_argument("--items", choices=["approved", "all", "failed"], default="approved",
                        help="approved (default, as the Export page): tagged and approved; all; failed: could not be tagged")
    export.add_argument("--excel", action="store_true", help="report only: write a UTF-8 BOM so Excel opens it correctly")

    compare = commands.add_parser("compare-captioners", help="the configured captioner and the vision LLM on a sample of a batch's photos")
    compare.add_argument("batch_id", type=int, metavar="BATCH_ID")
    compare.add_argument("--sample", type=int, default=10, help="photos to caption with both (1-50, default 10); the items are not changed")
    compare.add_argument("--json", action="store_true", help="print JSON: {reports: [...], rows: [...], notes: [...]}")

    store = commands.add_parser("store", help="store upkeep: backfill-edits indexes edits saved before the edits index (STORE=dynamodb)")
    store.add_argument("action", choices=["backfill-edits"])
    store.add_argument("--page-size", type=int, default=500, help="rows the Scan reads per page (1-1000, default 500)")

    model = commands.add_parser("make-test-model", help="write a tiny random BLIP-2 checkpoint for offline demos and tests")
    model.add_argument("directory", type=Path)
    return parser


def quiet_model_downloads() -> None:
    """No Hugging Face retry warnings, advisories or download bars on the terminal: a model that cannot be
    fetched ends in one `error:` line (the CLI's own progress bar is tqdm's, unaffected)."""
    for name, value in {"HF_HUB_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}.items():
        os.environ.setdefault(name, value)
    if "huggingface_hub" in sys.modules:  # imported already: the environment is read once, at import
        from huggingface_hub.utils import disable_progress_bars, logging as hub_logging

        hub_logging.set_verbosity_error()
        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def configure_observability() -> None:
    """Logs (LOG_LEVEL, LOG_FORMAT) and metrics (METRICS_FORMAT) on stderr: stdout keeps only the report."""
    from pipeline.observability import configure
    from pipeline.settings import Settings

    configure(Settings())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_model_downloads()
    try:
        if args.command != "make-test-model":
            configure_observability()
        if args.command == "tag":
            return tag_command(args)
        if args.command == "endpoint":
            return endpoint_command(args)
        if args.command == "estimate":
            return estimate_command(args)
        if args.command == "export":
            return export_command(args)
        if args.command == "compare-captioners":
            return compare_command(args)
        if args.command == "store":
            return store_command(args)
        if args.command == "make-test-model":
            from pipeline.testmodel import make_test_model

            print(f"wrote {one_line(make_test_model(args.directory))}")
            return 0
    except ValidationError as exc:
        from pipeline.settings import settings_problem

        print(f"error: {one_line(settings_problem(exc))}", file=sys.stderr)
        return 2
    except UserFacingError as exc:  # its sentence may quote a file name, a URL or a SKU: one printable line
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished items are saved; run again with --resume to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`... | head`): nothing more to say, no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python would complain at exit flushing stdout
        return 0
    except Exception as exc:  # never a traceback for a person
        print(f"error: {one_line(plain_problem(exc))}", file=sys.stderr)
        return 2
    return 0


def plain_problem(exc: Exception) -> str:
    """One sentence for an error nothing else explained: AWS configuration, a file, else its type."""
    from pipeline.admin.endpoint import aws_problem

    aws = aws_problem(exc, os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    if aws is not None:
        return aws
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"unexpected problem ({type(exc).__name__}{': ' + detail if detail else ''})"


def run_as_job(transform, settings, batch_id: int, photos: int, *, retry_failed: bool) -> None:
    from pipeline.batches.batch_transform import job_estimate

    job = transform.active_job(batch_id)
    if job is None:
        estimate = job_estimate(settings, photos)
        print(f"batch job for {photos} photos: about {estimate.minutes:g} min, estimated ${estimate.usd:,.2f} "
              f"({estimate.instance_count} x {estimate.instance_type})", file=sys.stderr)
        job = transform.start(batch_id, retry_failed=retry_failed)
        if job is None:
            print("nothing to send: every photo was cached or unreadable", file=sys.stderr)
            return
    print(f"following job {job.job_name} (Ctrl-C stops following; the job keeps running and --resume picks it up)",
          file=sys.stderr)
    job = transform.follow(job)
    print(f"job {job.job_name}: {job.done} of {job.total} photos captioned", file=sys.stderr)


def refuse_if_running(store, batch_id: int) -> None:
    """--resume on a batch another live process (dashboard task, another CLI) runs: say where, start nothing."""
    import time

    from pipeline.store import BatchBusyError, runner_is_dead_here

    batch = store.get_batch(batch_id)
    run = batch.run if batch is not None else None
    if run is not None and run.live(time.time()) and not runner_is_dead_here(run.owner):
        raise BatchBusyError(batch_id, run)


def refuse_out_in_store(out: Path, settings) -> None:
    """An --out that is the SQLite store (or its journal) or a file under DATA_DIR's image or upload folders would
    overwrite data the dashboard and --resume rely on: refused before anything runs (real paths: symlinks followed)."""
    target = Path(os.path.realpath(out))
    db = Path(os.path.realpath(settings.db_path))
    store_files = {db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))}
    folders = [Path(os.path.realpath(folder)) for folder in (settings.image_dir, settings.data_dir / "uploads")]
    if target in store_files or any(target.is_relative_to(folder) for folder in folders):
        raise UserFacingError(f"--out {out} is inside the pipeline's own data (DATA_DIR={settings.data_dir}): writing it "
                              "would overwrite the store or its photos; write the file somewhere else.")


def tag_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline.batches.export import export_csv
    from pipeline.batches.runner import run_batch
    from pipeline.batches.batch_transform import use_job_by_default
    from pipeline.captioners import captioner_readiness, photo_by_photo_problem
    from pipeline.service import build_stages, build_transform_runner
    from pipeline.settings import Settings

    if not args.out.parent.is_dir():  # before any work: a batch must not run only to find nowhere to write
        raise UserFacingError(f"The folder for --out does not exist: {args.out.parent}")
    check_range("--concurrency", args.concurrency, 1, MAX_CONCURRENCY)  # before Settings: 0 would be dropped below
    overrides = {key: getattr(args, key) for key in ("captioner", "summarizer", "concurrency") if getattr(args, key)}
    settings = Settings(**overrides)
    refuse_out_in_store(args.out, settings)  # before the store opens: the report must never replace it
    no_photo_by_photo = photo_by_photo_problem(settings)  # ENDPOINT_ENABLED=false with a SageMaker captioner: jobs only
    if no_photo_by_photo is not None and args.job == "never":  # before anything is staged or recorded
        instead = ("use --job auto or always (a batch transform job), or --captioner local" if settings.sagemaker_transform_s3
                   else "batch transform jobs would need SAGEMAKER_TRANSFORM_S3, which is not set: set it and use --job auto, "
                        "or use --captioner local (or openai-vision)")
        raise UserFacingError(f"--job never cannot run here: {no_photo_by_photo[0].lower()}{no_photo_by_photo[1:]}; {instead}.")
    if no_photo_by_photo is not None and not settings.sagemaker_transform_s3:
        raise UserFacingError(f"{no_photo_by_photo}, and batch jobs need SAGEMAKER_TRANSFORM_S3, which is not set: "
                              "nothing can caption these photos (set it, or use --captioner local).")
    stages = build_stages(settings)
    from pipeline.admin.brand import check_languages_supported, parse_languages

    languages = parse_languages(args.languages) if args.resume is None else ()  # a resumed batch keeps its own
    check_languages_supported(stages.summarizer, languages)  # before a model loads or a batch exists: one sentence, exit 2
    if args.resume is not None:
        refuse_if_running(stages.store, args.resume)  # one sentence and exit 2, never a second runner
    stages.captioner.warm_up()  # a model that cannot load is a fatal configuration error, not N failed rows
    look_alikes: list[str] = []  # a resumed batch was listed when it was staged
    if args.resume is not None:
        batch = stages.store.get_batch(args.resume)
        if batch is None:
            raise UserFacingError(f"There is no batch {args.resume}.")
    else:
        if not args.paths:
            raise UserFacingError("Give at least one image, zip or CSV to tag (or --resume BATCH_ID).")
        missing = [str(p) for p in args.paths if not p.exists()]
        if missing:
            raise UserFacingError(f"Not found: {', '.join(missing)}")
        from pipeline.images.staging_hashes import near_duplicate_notices
        from pipeline.ingest.sources import collect_sources, stage_sources
        from pipeline.service import ingest_limits

        # staged here rather than in create_batch: the look-alike notices read the same report (issue 19)
        report = stage_sources(collect_sources(list(args.paths), ingest_limits(settings)), allow_private_urls=settings.allow_private_urls)
        look_alikes = near_duplicate_notices(stages.store, report, max_distance=settings.near_duplicate_max_distance,
                                             catalogue_max=settings.near_duplicate_catalogue_max)
        batch = stages.store.create_batch(args.name or args.paths[0].name, _user(), report)
        if languages:
            stages.store.set_batch_languages(batch.id, languages)
    if args.resume is None or args.reuse_near_duplicates is not None:  # issue 19: a resumed batch keeps its own unless told
        reuse = settings.reuse_near_duplicates if args.reuse_near_duplicates is None else args.reuse_near_duplicates
        stages.store.set_reuse_near_duplicates(batch.id, reuse)
    # names of files, zip members, URLs: one printable line each, so none forges a line or drives the terminal
    print(f"batch {batch.id}: {one_line(batch.name)} ({batch.total} items)", file=sys.stderr)
    for notice in batch.notices:
        print(f"note: {one_line(notice)}", file=sys.stderr)
    for notice in look_alikes:  # the Tag page's near-duplicate list, before anything runs
        print(f"note: {one_line(notice)}", file=sys.stderr)

    to_process = len(stages.store.items_to_process(batch.id, retry_failed=args.retry_failed))
    transform = build_transform_runner(settings, stages) if args.job != "never" else None
    if transform is None and args.job == "always":
        raise UserFacingError("Batch jobs need CAPTIONER=sagemaker or sagemaker-async and SAGEMAKER_TRANSFORM_S3.")
    if transform is not None and (args.job == "always" or no_photo_by_photo is not None or transform.active_job(batch.id)
                                  or use_job_by_default(settings, to_process)):
        run_as_job(transform, settings, batch.id, to_process, retry_failed=args.retry_failed)
    else:
        readiness = captioner_readiness(stages.captioner)
        if readiness is not None and not readiness.ready:
            print(f"note: {one_line(readiness.message)}", file=sys.stderr)
        # said before the progress bar starts, so each is a line of its own
        if args.cheapest and stages.batch_summarizer is not None and stages.batch_summarizer.wanted(batch.id, to_process, cheapest=True):
            print("summaries through OpenAI's Batch API once every photo is captioned: half the price, within 24 h "
                  "(Ctrl-C stops waiting; --resume picks the same OpenAI batch up)", file=sys.stderr)
        elif args.cheapest and stages.batch_summarizer is None:
            print("note: --cheapest does nothing with the offline summarizer: it makes no paid calls "
                  "(--cheapest is for SUMMARIZER=openai).", file=sys.stderr)
        elif args.cheapest and to_process:
            print(f"note: --cheapest: {to_process} photo{'s' * (to_process != 1)} to summarize is below OPENAI_BATCH_MIN_ITEMS "
                  f"({stages.batch_summarizer.min_items}), so summaries run real time at the full price.", file=sys.stderr)
        # JSON logs on stderr are read by machines: no bar redrawn in between (the item events show progress)
        with tqdm(total=to_process, unit="img", file=sys.stderr, disable=settings.log_format == "json") as bar:
            def on_progress(progress) -> None:
                bar.n = progress.done
                bar.set_postfix(failed=progress.failed, refresh=False)
                bar.refresh()

            run_batch(stages, batch.id, concurrency=settings.concurrency, on_progress=on_progress, retry_failed=args.retry_failed,
                      cheapest=args.cheapest)

    items = stages.store.list_items(batch.id)
    from pipeline.admin.taxonomy import current_schema

    args.out.write_bytes(export_csv(items, current_schema(stages), excel_bom=args.excel))
    tagged = sum(item.status == "ok" for item in items)
    print(f"{tagged} tagged, {len(items) - tagged} failed")
    return 0


def endpoint_command(args: argparse.Namespace) -> int:
    """The CLI acts with the caller's AWS credentials, so IAM is its guard: the caller counts as admin."""
    from pipeline.admin.endpoint import Actor, EndpointController
    from pipeline.service import open_store
    from pipeline.settings import Settings

    settings = Settings()
    if args.action == "status" and not settings.endpoint_enabled:  # no endpoint to ask AWS about
        from pipeline.admin.endpoint import NO_ENDPOINT

        print(NO_ENDPOINT)
        return 0
    control = EndpointController.from_settings(settings, open_store(settings), endpoint_url=args.endpoint_url)
    actor = Actor(f"{_user()} (cli)", True)
    if args.action == "status":
        status = control.status()
        print(one_line(f"{status.name} ({status.mode}): {status.state}"
              + (f", {status.instance_count} × {status.instance_type}" if status.instance_type else "")
              + (f", since {status.since:%Y-%m-%d %H:%M} UTC" if status.since else "")
              + (f", last invocation {status.last_invocation:%Y-%m-%d %H:%M} UTC" if status.last_invocation else ", no invocations on record")))
        if status.detail:
            print(one_line(status.detail))
        return 0
    if args.action == "autostop":
        result = control.autostop(args.idle_minutes or settings.autostop_idle_minutes, Actor("autostop", True))
    else:
        result = getattr(control, args.action)(actor)
    print(one_line(f"{result.action}: {result.result}. {result.message}"))
    return 1 if result.result == "refused" else 0


# The estimator's numbers, bounded as the Admin page's "What if…" form bounds the same inputs (dashboard/pages/admin.py
# render_estimator); --languages: at most the extra summary languages offered (pipeline/admin/brand.py, English always).
MAX_IMAGES_PER_MONTH = 100_000_000  # far past any break-even (the estimator compares up to 1,000,000)
ESTIMATE_BOUNDS = {"images_per_month": ("--images-per-month", 1, MAX_IMAGES_PER_MONTH), "working_days": ("--working-days", 1, 31),
                   "hours_per_day": ("--hours-per-day", 1, 24), "batches_per_month": ("--batches-per-month", 1, 1000),
                   "max_latency_s": ("--max-latency-s", 1, 86_400), "extra_languages": ("--languages", 0, None)}
MAX_CONCURRENCY = 64  # tag --concurrency and CONCURRENCY (Settings.concurrency's bound)


def check_range(flag: str, value: float | None, low: float, high: float | None) -> None:
    """One sentence for a number out of its range (NaN included); None: not given."""
    if value is None or (low <= value and (high is None or value <= high)):
        return
    def shown(number: float) -> str:
        return f"{number:,}" if isinstance(number, int) else f"{number:g}"

    allowed = f"from {shown(low)} to {shown(high)}" if high is not None else f"{shown(low)} or more"
    raise UserFacingError(f"{flag} must be {allowed} (got {shown(value)}).")


def check_estimate_bounds(args: argparse.Namespace) -> None:
    from pipeline.admin.brand import LANGUAGES

    for key, (flag, low, high) in ESTIMATE_BOUNDS.items():
        check_range(flag, getattr(args, key), low, len(LANGUAGES) - 1 if key == "extra_languages" else high)


def estimate_command(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from pipeline.admin.costs import PROFILES, Assumptions, PriceTable, break_even_points, estimate_monthly_cost
    from pipeline.settings import Settings

    check_estimate_bounds(args)
    settings = Settings()
    keys = ("working_days", "hours_per_day", "batches_per_month", "summary_model", "summary_mode", "extra_languages")
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    overrides["seo_fields_by"] = args.seo_fields_by or settings.seo_fields_by
    assumptions = replace(Assumptions(instance_type=settings.sagemaker_instance_type), images_per_month=args.images_per_month, **overrides)
    profile = args.profile or settings.deployment_profile
    prices = PriceTable.load(settings.prices_file)
    estimate = estimate_monthly_cost(assumptions, prices, profile)
    if args.json:
        data = estimate.to_json()
        data["break_even"] = [vars(p) for p in break_even_points(assumptions, prices, 100, 1_000_000, profile)]
        print(json.dumps(data, indent=2))
        return 0
    print(f"{args.images_per_month:,} images/month, summaries by {assumptions.summary_model} ({assumptions.summary_mode}), "
          f"SEO fields by {assumptions.seo_fields_by}, profile {profile}: {PROFILES[profile].what}")
    print(f"  gives up: {PROFILES[profile].gives_up}")
    for scenario in estimate.scenarios:
        print(f"  {scenario.name:<40} ${scenario.monthly_usd:>9,.2f}/month   first result: {scenario.latency}")
        print("      " + ", ".join(f"{component} {usd:,.2f}" for component, usd in scenario.breakdown.items()))
    for point in break_even_points(assumptions, prices, 100, 1_000_000, profile):
        print(f"break-even at {point.images_per_month:,.0f} images/month (${point.monthly_usd:,.2f}): "
              f"{point.cheaper_before} below, {point.cheaper_after} above")
    if args.max_latency_s is not None:
        best = estimate.cheapest_meeting(args.max_latency_s)
        print(f"cheapest within {args.max_latency_s:g} s: " + (f"{best.name} (${best.monthly_usd:,.2f})" if best else "none"))
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def export_command(args: argparse.Namespace) -> int:
    """One batch as one file. Notes on what a feed lacks go to stderr; the summary line too with `--out -`."""
    from pipeline.attributes import load_attribute_schema
    from pipeline.batches.export import filter_items
    from pipeline.batches.feeds import export_file
    from pipeline.service import open_store
    from pipeline.settings import Settings

    to_stdout = args.out == "-"
    out = Path(args.out)
    if not to_stdout:
        if out.is_dir():
            raise UserFacingError(f"--out is a folder, not a file: {out}")
        if not out.parent.is_dir():
            raise UserFacingError(f"The folder for --out does not exist: {out.parent}")
    settings = Settings()
    if not to_stdout:
        refuse_out_in_store(out, settings)
    if settings.store == "sqlite" and not settings.db_path.exists():  # say so without creating an empty store
        raise UserFacingError(f"There is no batch {args.batch_id}: no store at {settings.db_path} yet (is DATA_DIR set as when you tagged?).")
    store = open_store(settings)
    batch = store.get_batch(args.batch_id)
    if batch is None:
        raise UserFacingError(f"There is no batch {args.batch_id}.")
    everything = store.list_items(batch.id)
    if not everything:
        raise UserFacingError(f"Batch {batch.id} has no items to export.")
    items = filter_items(everything, args.items)
    product_file = args.export_format != "report"
    if not (any(item.status == "ok" for item in items) if product_file else items):
        which = {"approved": "approved", "all": "tagged", "failed": "failed"}[args.items]
        if product_file and args.items == "failed":
            raise UserFacingError("Failed items have no product data: a product file lists tagged items only (try --items approved or all).")
        hint = " (--items all exports every tagged item)" if args.items == "approved" else ""
        raise UserFacingError(f"Batch {batch.id} has no {which} items to export{hint}.")
    from pipeline.admin.taxonomy import active_taxonomy

    schema = active_taxonomy(store, load_attribute_schema(settings.attribute_schema))[1]  # the active taxonomy's columns
    exported = export_file(args.export_format, items, schema,
                           name=f"batch-{batch.id}-{args.items}", excel_bom=args.excel and args.export_format == "report")
    for notice in exported.notices:
        print(f"note: {one_line(notice)}", file=sys.stderr)
    if to_stdout:
        sys.stdout.buffer.write(exported.data)
        sys.stdout.flush()
    else:
        try:
            out.write_bytes(exported.data)
        except OSError as exc:
            raise UserFacingError(f"Could not write {out}: {exc.strerror or type(exc).__name__}.") from exc
    print(f"{exported.rows} row{'s' * (exported.rows != 1)} written to {'standard output' if to_stdout else one_line(out)}",
          file=sys.stderr if to_stdout else sys.stdout)
    return 0


def compare_command(args: argparse.Namespace) -> int:
    """Both captioners on a sample of one batch (pipeline/batches/comparison.py): a table per captioner, then
    each photo's captions. Nothing about the items changes; the vision model's calls are paid and recorded."""
    import json
    from dataclasses import asdict

    from pipeline.batches.comparison import captioners_to_compare, compare_captioners, report_table
    from pipeline.admin.costs import PriceTable
    from pipeline.service import build_stages
    from pipeline.settings import Settings

    settings = Settings()
    if settings.store == "sqlite" and not settings.db_path.exists():
        raise UserFacingError(f"There is no batch {args.batch_id}: no store at {settings.db_path} yet (is DATA_DIR set as when you tagged?).")
    stages = build_stages(settings)
    prices = PriceTable.load(settings.prices_file)
    if stages.store.get_batch(args.batch_id) is None:
        raise UserFacingError(f"There is no batch {args.batch_id}.")
    comparison = compare_captioners(stages, args.batch_id, args.sample, captioners_to_compare(settings, stages.store, stages.captioner), prices,
                                    instance_type=settings.sagemaker_instance_type)
    if args.json:
        print(json.dumps({"batch_id": comparison.batch_id, "reports": [asdict(r) for r in comparison.reports],
                          "rows": [asdict(r) for r in comparison.rows], "notes": comparison.notes}, indent=2, default=str))
        return 0
    print(f"Batch {comparison.batch_id}: {len(comparison.rows)} photo(s) captioned by each captioner; the items are unchanged.")
    for row in report_table(comparison):
        print("\n".join(f"  {key}: {one_line(value)}" for key, value in row.items()))
        print()
    for report in comparison.reports:
        print(one_line(f"{report.label}: cost: {report.cost_basis} Acceptance: {report.acceptance_note}"))
    for note in comparison.notes:
        print(f"note: {one_line(note)}", file=sys.stderr)
    print()
    for row in comparison.rows:  # file names and the models' captions: one printable line each
        print(f"#{row.seq + 1} {one_line(row.source)}: stored caption: {one_line(row.stored_caption or '(none)')}")
        for report in comparison.reports:
            said = row.captions.get(report.label)
            print(f"  {one_line(report.label)}: {one_line(said if said is not None else 'failed: ' + row.errors.get(report.label, ''))}")
    return 0


def store_command(args: argparse.Namespace) -> int:
    """`store backfill-edits`: edits a DynamoDB table holds from before its edits index get their entry, so the Quality
    page counts them (DynamoStore.backfill_edit_index: idempotent, safe on two machines at once). One line of result."""
    import logging

    from pipeline.service import open_store
    from pipeline.settings import Settings

    if not 1 <= args.page_size <= 1000:
        raise UserFacingError("--page-size must be between 1 and 1000 rows.")
    settings = Settings()
    if settings.store != "dynamodb":
        print("Nothing to do: the SQLite store's edits index covers every edit (backfill-edits is for STORE=dynamodb).")
        return 0
    log = logging.getLogger("pipeline.store")
    report = open_store(settings).backfill_edit_index(  # type: ignore[attr-defined]
        page_size=args.page_size,
        on_page=lambda r: log.info("edits index backfill page", extra={"pages": r.pages, "rows_read": r.rows_read,
                                                                       "indexed": r.indexed, "done_elsewhere": r.done_elsewhere}))
    print(f"Edits index: {report.indexed:,} older edit(s) added, {report.done_elsewhere:,} added meanwhile by another run, "
          f"{report.no_time:,} without a time left as they are; {report.rows_read:,} rows read in {report.pages:,} page(s).")
    return 0
