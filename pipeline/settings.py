"""The one place configuration comes from: environment variables and an optional `.env` file.

Every field here is documented in the settings table in docs/settings.md (a test checks that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LOCAL_MODEL = "Salesforce/blip-image-captioning-base"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where things live
    data_dir: Path = Field(Path("./data"), description="SQLite database and local image store.")

    # Backends
    captioner: Literal["local", "sagemaker", "sagemaker-async", "openai-vision"] = Field(
        "local", description="`sagemaker`: real-time endpoint; `sagemaker-async`: async endpoint (S3 in/out); "
        "`openai-vision`: an OpenAI vision model (OPENAI_VISION_MODEL)."
    )
    caption_model: str = Field(DEFAULT_LOCAL_MODEL, description="HF model id or local directory for the local captioner.")
    summarizer: Literal["openai", "offline"] | None = Field(
        None, description="Defaults to `openai` when OPENAI_API_KEY is set, else `offline`."
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o"
    openai_fallback_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 30.0
    openai_max_retries: int = 2
    openai_deadline_s: float = Field(
        60.0, description="Most time one product's summary may take, all retries, the fallback model and the corrective retry included."
    )
    sagemaker_endpoint: str = "blip2-endpoint"
    sagemaker_timeout_s: float = 60.0
    sagemaker_runtime_url: str | None = Field(None, description="Override the sagemaker-runtime URL (local serving, tests).")
    aws_region: str = "us-east-1"
    sagemaker_mode: Literal["realtime", "async"] = "realtime"
    sagemaker_instance_type: str = "ml.g4dn.xlarge"
    sagemaker_image_uri: str | None = Field(None, description="None: the region's Hugging Face PyTorch inference DLC.")
    sagemaker_role_arn: str | None = None
    sagemaker_hf_model_id: str = "Salesforce/blip2-flan-t5-xl"
    sagemaker_hf_model_revision: str | None = None
    sagemaker_async_s3: str | None = None
    sagemaker_model_name: str | None = Field(None, description="Model for batch transform; None: the one behind SAGEMAKER_ENDPOINT.")

    # Async inference (CAPTIONER=sagemaker-async); requests go to <SAGEMAKER_ASYNC_S3>/input/
    async_timeout_s: float = Field(900.0, description="Per photo, once the endpoint is warm; a late photo fails and can be retried.")
    async_poll_max_s: float = Field(20.0, description="Longest wait between two looks at one photo's result (backoff cap).")
    async_sqs_queue_url: str | None = Field(None, description="SQS queue subscribed to the endpoint's SNS topics; None polls S3.")
    async_max_in_flight: int = Field(32, description="Photos submitted to the async endpoint at once.")

    # Batch transform
    transform_threshold: int = Field(500, description="Batches this large run as a batch transform job (0: only on request).")
    transform_instance_type: str = "ml.g4dn.xlarge"
    transform_instance_count: int = 1
    sagemaker_transform_s3: str | None = Field(None, description="s3://bucket/prefix for transform jobs' inputs and outputs.")
    transform_poll_s: float = Field(30.0, description="How often a running transform job is checked.")

    # OpenAI Batch API summaries (pipeline/summarizers/openai_batch.py): half the token price, answers within 24 h
    openai_batch_min_items: int = Field(
        50, ge=1, description="Summaries go through the Batch API only when at least this many items need one "
        "(transform jobs, or a run with Cheapest picked); smaller runs summarize one by one.")
    openai_batch_for_jobs: bool = Field(True, description="Batch transform jobs send their summaries through the Batch API.")
    openai_batch_poll_s: float = Field(
        60.0, gt=0, description="Longest pause between two looks at a submitted OpenAI batch (looks start at 5 s and grow 1.5x).")
    openai_batch_deadline_s: float = Field(
        90000.0, gt=0, description="Most time a submitted OpenAI batch is waited for, counted from submission across restarts; "
        "then it is cancelled and its unanswered items handled as OPENAI_BATCH_FALLBACK says.")
    openai_batch_fallback: bool = Field(
        True, description="Items the Batch API did not answer (expired, cancelled at the deadline, rate-limited, 5xx) are "
        "summarized one by one at the full price; false: they fail with a retry message.")

    # Vision-LLM captioner (CAPTIONER=openai-vision, pipeline/captioners/openai_vision.py; issue 19); uses
    # OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT_S and OPENAI_MAX_RETRIES like the summarizer
    openai_vision_model: str = Field("gpt-4o-mini", description="OpenAI model that captions photos for CAPTIONER=openai-vision "
                                     "and the Admin captioner comparison.")
    openai_vision_detail: Literal["low", "high", "auto"] = Field(
        "low", description="Image detail sent with each photo; `low` is a fixed token price per photo.")
    openai_vision_deadline_s: float = Field(60.0, gt=0, description="Most time one photo's caption may take, retries included.")

    # SEO fields (issue 19; pipeline/summarizers/openai_summarizer.py SEO_PROMPT, docs/costs.md): who writes seo_title,
    # meta_description and alt_text when SUMMARIZER=openai (real time, Batch API, Regenerate). The offline summarizer
    # always uses its template.
    seo_fields_by: Literal["template", "model"] = Field(
        "template", description="`template`: filled after the answer from the title, summary, caption and attributes by the "
        "offline template (same limits, no marketing words in the alt text; free); `model`: GPT-4o writes them (about 199 more "
        "input and up to 102 more output tokens per photo, `estimate --seo-fields-by model`).")

    # Storage for more than one task
    store: Literal["sqlite", "dynamodb"] = Field("sqlite", description="`dynamodb` for more than one dashboard task.")
    dynamodb_table: str = "product-tagging"
    image_bucket: str | None = Field(None, description="Private S3 bucket for uploads, photos, thumbnails; None: DATA_DIR.")
    presign_expiry_s: int = Field(3600, description="Lifetime of the presigned photo URLs pages show.")

    prices_file: Path | None = Field(None, description="JSON price overrides (same keys as pipeline/admin/prices.json).")
    # Deployment cost profile (issue 17): the always-on shape the Admin estimator and month-to-date use (costs.PROFILES)
    deployment_profile: Literal["own-alb", "own-alb-business-hours", "own-alb-ipv6-business-hours", "shared-alb-business-hours",
                                "own-alb-ipv6-batch"] = Field(
        "own-alb", description="The deployment profile this dashboard runs under (the CDK stack sets it).")
    endpoint_enabled: bool = Field(
        True, description="false: this deployment has no SageMaker endpoint (the CDK stack's realtime_endpoint false): photos "
        "are captioned by batch transform jobs only; the Admin page offers no Start / Stop and `endpoint start` refuses. With "
        "CAPTIONER=sagemaker or sagemaker-async every batch then runs as a job (the Tag page offers no photo by photo, CLI "
        "`tag --job never` refuses); the local and OpenAI vision captioners need no endpoint and still run photo by photo.")
    autostop_idle_minutes: float = Field(30.0, description="Idle time after which `endpoint autostop` stops the endpoint.")
    endpoint_warmup_minutes: float = Field(10.0, description="Expected start-up time shown when starting the endpoint.")

    # Model behaviour
    attribute_schema: Path | None = Field(None, description="JSON attribute schema; None uses the shipped default.")
    max_new_tokens: int = 30
    caption_cache: bool = True

    # Input limits (bad input is rejected per item, never crashes a batch)
    max_images_per_batch: int = 5000
    max_file_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    zip_max_total_bytes: int = 2 * 1024 * 1024 * 1024
    zip_max_ratio: float = 100.0
    url_timeout_s: float = 10.0
    fetch_deadline_s: float = Field(
        30.0, gt=0, description="Most time one image URL download may take (resolution, connect, TLS, headers, body, redirects); then that item fails."
    )
    allow_private_urls: bool = False
    s3_allowed_buckets: list[str] = Field(default_factory=list)

    # Normalization
    max_side: int = 768
    jpeg_quality: int = 85
    decode_budget_mb: float = Field(
        256.0,
        description="Decoded pixels (MB) all workers of the process may hold at once; a larger single image decodes alone. 0: no limit.",
    )
    raw_bytes_budget_mb: float = Field(
        128.0,
        description="Raw image bytes (MB, as read from a file, zip, URL or S3) all workers of the process may hold at once, "
        "from before the read until the normalized JPEG exists; a URL or S3 object counts as MAX_FILE_BYTES until downloaded. 0: no limit.",
    )

    # Near-duplicate photos (issue 19; pipeline/images/perceptual.py, docs/operations.md "Near-duplicate photos")
    near_duplicate_max_distance: int = Field(
        10, ge=0, le=64, description="Two photos whose 64-bit perceptual hashes differ in at most this many bits are near-duplicates "
        "(measured: re-encoded / resized / slightly cropped / brightened copies 0-6, different products on white 18 or more).")
    reuse_near_duplicates: bool = Field(
        False, description="Default of the batch option that copies the caption and attributes of an already tagged near-duplicate "
        "instead of calling the captioner (Tag page checkbox, CLI tag --reuse-near-duplicates).")
    near_duplicate_catalogue_max: int = Field(
        100_000, ge=0, description="Most tagged photos (newest first) a run compares new photos with; loaded once per run. 0: within "
        "the batch only.")

    # Runner
    concurrency: int = Field(4, ge=1, le=64, description="Captioner (and summarizer) calls in flight per batch, 1 to 64.")
    lease_s: float = Field(
        120.0, gt=0, description="How long a runner's claim on a batch and on each item lasts without a heartbeat "
        "(renewed every third of it); a crashed runner's items are taken over after this.")
    item_deadline_s: float = Field(
        600.0, gt=0, description="Most time one item may take over all its stages; then it fails with a retryable "
        "message and the runner stops waiting for it (raised to cover ASYNC_TIMEOUT_S plus warm-up for the async captioner).")
    stop_grace_s: float = Field(
        5.0, ge=0, description="After Stop, how long items already in a paid call are waited for before the runner lets go.")

    # Dashboard sign-in and roles
    auth_mode: Literal["dev", "alb"] = Field("dev", description="`alb`: verify the load balancer's OIDC token; `dev`: one local user.")
    alb_arn: str | None = Field(None, description="The load balancer allowed to sign tokens (AUTH_MODE=alb).")
    alb_key_url: str = "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}"
    admin_emails: list[str] = Field(default_factory=list)
    admin_group: str | None = None
    group_claim: str = "groups"
    dev_user_email: str = "dev@localhost"
    dev_user_is_admin: bool = True
    results_page_size: int = 50

    # Logs and metrics (docs/operations.md "Logs and metrics"; the container image sets json / INFO / emf)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Our loggers' level (other libraries log WARNING and up); INFO logs one event per item stage.")
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per line on stderr; `text`: for a terminal.")
    metrics_format: Literal["emf", "off"] = Field(
        "off", description="`emf`: CloudWatch Embedded Metric Format lines on stderr; metrics are kept in-process either way.")
    metrics_namespace: str = Field("ProductTagger", description="CloudWatch namespace of the EMF metrics.")

    @field_validator("log_level", "log_format", "metrics_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if value.strip().upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else value.strip().lower()

    # An empty secret is no secret: `OPENAI_API_KEY=` (the .env template's line) or spaces mean unset, so every path
    # that needs the key says so in its own sentence instead of the openai client failing on an empty one.
    @field_validator("openai_api_key", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @model_validator(mode="after")
    def _default_summarizer(self) -> "Settings":
        if self.summarizer is None:
            self.summarizer = "openai" if self.openai_api_key else "offline"
        return self

    @model_validator(mode="after")
    def _shared_images_with_shared_store(self) -> "Settings":
        if self.store == "dynamodb" and not self.image_bucket:
            raise ValueError("STORE=dynamodb needs IMAGE_BUCKET: every task must see the same photos.")
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pipeline.sqlite3"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"


def settings_problem(exc: ValidationError) -> str:
    """One sentence for settings that cannot be used, as the CLI and dashboard/serve.py print it after `error: `:
    `setting CONCURRENCY: <why>` for one variable, the validator's own sentence for a rule across several (no empty
    setting name, no pydantic "Value error, " prefix)."""
    first = exc.errors()[0]
    message = str(first.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    name = ".".join(str(part) for part in first.get("loc", ())).upper()
    return f"setting {name}: {message}" if name else message
