"""One settings object for every server-side process, read from ``WARDWATCH_*`` environment variables.

``model/`` and ``ingest/`` never read the environment: the server turns these settings into their small
config dataclasses.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingest.destinations import DestinationPolicy
from ingest.stream import ReconnectPolicy
from server.security.secret_box import SecretBox

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = REPO_ROOT / "model" / "assets" / "demo_tiny3d.pt"
DEFAULT_WEB_DIR = REPO_ROOT / "web"
#: broker URL schemes: Redis (``rediss``: over TLS) and RabbitMQ (``amqp``/``pyamqp``; ``amqps``: over TLS)
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")


class Settings(BaseSettings):
    """Runtime configuration. Embedded defaults: SQLite under ``data_dir``, no broker, CPU or one GPU."""

    # hide_input_in_errors: a refused value is not echoed at start-up (a broker or database URL holds a password)
    model_config = SettingsConfigDict(env_prefix="WARDWATCH_", env_file=None, extra="ignore", hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(default=Path("wardwatch-data"), description="recordings, media and SQLite live here")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(
        default=None, repr=False,
        description="Celery broker: redis://host:6379/0 or amqp://user:password@host:5672/vhost (RabbitMQ); "
                    "none = embedded")
    result_backend: str | None = None
    # Broker transport settings (server/worker/app.py says why each is set as it is).
    broker_visibility_timeout_seconds: float = Field(
        default=12 * 3600, gt=0,
        description="Redis: a delivered message not acknowledged within this is handed out again; longer than the "
                    "longest task and webhook countdown (the job lease, not this, notices a dead worker)")
    broker_heartbeat_seconds: int = Field(
        default=0, ge=0,
        description="RabbitMQ: AMQP heartbeat; 0 = off, because a solo-pool worker cannot answer heartbeats while "
                    "a task runs (TCP keepalive notices a dead peer)")
    broker_connect_timeout_seconds: float = Field(
        default=4.0, gt=0, description="connecting to the broker (sending a task, readiness); then the call gives up")
    model_path: Path = DEFAULT_MODEL_PATH
    device: str = "auto"
    web_dir: Path = DEFAULT_WEB_DIR
    auto_migrate: bool = Field(default=True, description="run `alembic upgrade head` at start-up")

    import_dir: Path | None = Field(default=None, description="server-side imports come from here only")
    watch_dir: Path | None = Field(default=None, description="new video files here are ingested once")
    watch_interval: float = 5.0
    watch_settle_seconds: float = 5.0
    stream_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="where live streams may connect: CIDRs (10.20.0.0/16, 127.0.0.1/32), host names and *.domain "
                    "patterns, comma-separated or JSON; empty: any address but loopback, link-local (cloud "
                    "metadata), unspecified, multicast and reserved ones, which only a network entry inside "
                    "them allows (docs/streams.md)")
    stream_max_reconnects: int = Field(
        default=20, ge=0, description="consecutive failed connection attempts before a stream job fails; "
                                      "0: retry forever (an explicit choice)")
    stream_backoff_initial_seconds: float = Field(default=1.0, ge=0, description="first wait between attempts")
    stream_backoff_max_seconds: float = Field(default=30.0, ge=0, description="cap of the doubling wait")
    max_streams: int = Field(default=8, ge=1, description="live streams read at once; one more gets 429")
    stream_archive: bool = Field(
        default=True, description="store live streams on disk as they are read (review clips of stream events)")
    stream_archive_segment_seconds: float = Field(
        default=10.0, gt=0, le=600, description="length of a stream archive segment file (closed at a keyframe)")
    stream_archive_max_hours: float = Field(
        default=24.0, ge=0, description="stream archive segments older than this are removed, unless an event "
                                        "needs them (unreviewed, or its clip not cut yet); 0: no age limit")
    stream_archive_max_bytes: int = Field(
        default=20 * 1024**3, ge=0, description="per stream: oldest segments are removed beyond this, unless an "
                                                "event needs them; 0: no size limit")
    filename_time_pattern: str | None = Field(
        default=None, description="strftime pattern of the start time in file names, e.g. %Y%m%d_%H%M%S (UTC)")
    admin_token: str | None = Field(default=None, description="retired: refused at start-up (see _retired)")

    session_idle_minutes: float = Field(default=30, gt=0, description="a browser session ends after this idle time")
    session_absolute_hours: float = Field(default=12, gt=0, description="and after this long, whatever the activity")
    login_max_failures: int = Field(default=5, ge=1, description="failed sign-ins per username ...")
    login_max_failures_per_address: int = Field(
        default=50, ge=1, description="... and per client address (a hospital NAT shares one: keep it higher) ...")
    login_window_seconds: int = Field(default=900, ge=1, description="... within this window before 429")
    purge_interval_minutes: float = Field(
        default=60, ge=0, description="ended sessions and old sign-in tries are deleted at start-up and this often "
                                      "(0: at start-up only); see server/housekeeper.py")
    cookie_secure: bool | None = Field(
        default=None, description="the session cookie's Secure flag; None: always in production, else over https")
    token_default_expiry_days: int | None = Field(default=90, ge=1, description="API tokens; None: no expiry")
    secret_keys: Annotated[list[str], NoDecode] = Field(
        default=[], repr=False,
        description="Fernet keys for secrets at rest, comma-separated, first encrypts (server/security/secret_box.py);"
                    " development default: data_dir/secret.key; required in production")

    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1", "localhost", "[::1]", "testserver"],
        description="Host header values served (DNS rebinding); comma-separated or JSON; *.example.org; * = any")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="request line and headers, in bytes")
    max_header_count: int = Field(default=100, ge=10, description="request headers per request")

    max_upload_bytes: int = 4 * 1024**3
    max_body_bytes: int = Field(default=1024**2, ge=1024, description="request bodies but uploads (JSON), in bytes")
    body_idle_timeout_seconds: float = Field(
        default=60, gt=0, description="a request body that sends nothing for this long is refused (408)")
    quarantine_max_bytes: int = Field(
        default=1024**3, ge=0,
        description="rejected uploads kept in data_dir/quarantine for diagnosis, oldest removed first; 0: deleted")
    upload_chunk_bytes: int = 1024 * 1024
    embedded_workers: int = 1

    # Concurrency of one API process (server/api/admission.py): sync routes and dependencies run on
    # ``api_threads`` AnyIO worker threads; at most that many requests (or the pool size, if smaller) use the
    # database at once, each holding one pooled connection, so no thread ever waits on the pool.
    api_threads: int = Field(default=40, ge=1, description="AnyIO worker threads (AnyIO's default is 40)")
    db_pool_size: int | None = Field(
        default=None, ge=1, description="pooled database connections per process; None: api_threads. Keep "
                                        "processes x (pool + overflow) under PostgreSQL's max_connections")
    db_pool_overflow: int = Field(default=8, ge=0, description="extra connections for background threads")
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="a request waits this long for a database connection, then gets 503")

    # Job leases (server/services/jobs.py): a running job's owner renews its lease every heartbeat; a job whose
    # lease expired is re-queued by the sweeper of any API process, and failed after the bounded attempts.
    job_lease_seconds: float = Field(default=30.0, gt=0, description="a running job's lease, renewed by heartbeat")
    job_heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often the owner renews it")
    job_sweep_seconds: float = Field(default=10.0, gt=0, description="how often expired leases are looked for")
    job_max_attempts: int = Field(default=3, ge=1, description="starts of a job before a lost worker fails it")
    # Lost messages (server/services/job_recovery.py): a job queued for longer than this whose queue holds fewer
    # messages than such jobs is sent again (a broker restarted without its data, a send while it was down).
    job_redispatch_seconds: float = Field(
        default=120.0, gt=0, description="a queued job waits this long after its last hand-over before it may be "
                                         "sent again (broker mode)")
    job_max_dispatches: int = Field(
        default=10, ge=1, description="hand-overs of a queued job before it is failed as never taken by a worker")

    # Segments, retries and the batcher (server/worker/): a recording is scored as segment tasks (run in parallel
    # by the workers), and each worker process's batcher fills forward batches from every task it runs.
    segment_seconds: float = Field(
        default=300.0, gt=0, description="recording time per segment task (cut on clip boundaries); a recording "
                                         "no longer than this is scored as one task")
    task_max_retries: int = Field(default=5, ge=0, description="tries again after a transient error (database "
                                                                "or broker connection) before the job fails")
    task_retry_backoff_seconds: float = Field(default=1.0, gt=0, description="first wait; doubles each retry")
    task_retry_backoff_max_seconds: float = Field(default=60.0, gt=0, description="cap of the doubling wait")
    worker_concurrency: int = Field(default=2, ge=1, description="tasks one `wardwatch worker` runs at once "
                                                                 "(threads sharing one batcher; 1: solo pool)")
    clip_stride_seconds: float | None = Field(default=None, description="default: the model's clip length")
    score_batch_size: int = Field(default=8, ge=1, description="clips per forward pass: the batcher's maximum")
    score_batch_wait_seconds: float = Field(
        default=0.05, ge=0, description="a forward pass waits at most this long after its first clip for more "
                                        "clips (from any task of the process) to fill the batch")
    inference_precision: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="autocast dtype on CUDA (auto: float16); CPU always scores in float32")
    inference_channels_last: bool | None = Field(
        default=None, description="channels-last (3-D) memory format; None: on CUDA only")
    decode_prefetch_batches: int = Field(
        default=2, ge=0, description="batches decoded ahead by the decode thread while the model scores; 0: none")
    commit_every: int = Field(default=32, ge=1, description="clips per commit: progress granularity, resume point")
    event_threshold: float = 0.5
    event_low_threshold: float | None = None
    event_min_duration: float = 0.0
    event_merge_gap: float = 2.0
    review_clip_pre_seconds: float = Field(default=2.0, ge=0, description="review clip starts this early")
    review_clip_post_seconds: float = Field(default=2.0, ge=0, description="and ends this late")
    clinician_event_max_seconds: float = Field(
        default=600.0, gt=0, description="longest range a clinician may mark as one missed event (POST "
        "/recordings/{id}/events answers 422 beyond it): its review clip is exported from the file, so this bounds "
        "that work")
    explain_methods: tuple[str, ...] = ("grad_cam", "guided_backprop", "guided_grad_cam")

    fhir_system_base: str = Field(
        default="https://wardwatch.example.org/fhir",
        description="FHIR export: base of this installation's code systems and identifier systems (docs/fhir.md); "
                    "give each installation its own so their identifiers never collide")
    fhir_label_system: str | None = Field(
        default=None, description="FHIR export: code system of the event labels; default "
                                  "<fhir_system_base>/CodeSystem/event-label")
    # Webhooks (docs/webhooks.md): attempt n waits base * factor**(n-1) seconds (at most max) after attempt n-1.
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, description="connect / read / write timeout per POST; a whole attempt ends by twice this")
    webhook_max_attempts: int = Field(default=6, ge=1, description="then the delivery is failed")
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0)
    webhook_backoff_factor: float = Field(default=2.0, ge=1)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_sweep_seconds: float = Field(default=30.0, gt=0, description="how often due deliveries are re-sent")
    webhook_workers: int = Field(default=4, ge=1, description="embedded mode: attempts sent at once")
    webhook_allow_local_targets: bool = Field(
        default=False, description="production: allow loopback / link-local webhook URLs (always in development)")

    # Observability (docs/metrics.md)
    metrics_token: str | None = Field(default=None, repr=False,
                                      description="GET /metrics needs 'Authorization: Bearer <this>'")
    metrics_loopback: bool = Field(
        default=False, description="also serve /metrics without the token to loopback callers that no proxy "
                                   "forwarded (a Prometheus on the same host)")
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object per line")

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """``a,b`` or a JSON list; an IPv6 literal is written with or without brackets (the Host header has them)."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") and '"' in value else value.split(",")
        if isinstance(value, list | tuple):
            hosts = [str(host).strip().lower() for host in value if str(host).strip()]
            for host in hosts:
                if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
                    raise ValueError(f"trusted host {host!r}: a wildcard is only '*' or '*.example.org'")
            return [f"[{host}]" if ":" in host and not host.startswith("[") else host for host in hosts]
        return value

    @field_validator("stream_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        """``a,b`` or a JSON list; every entry must parse (a typo must not silently allow nothing or more)."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if isinstance(value, list | tuple):
            entries = [str(entry).strip() for entry in value if str(entry).strip()]
            DestinationPolicy.parse(entries)
            return entries
        return value

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        """Redis or RabbitMQ (the two transports tested); a typo (``reddis://``) fails at start-up, not at the
        first upload. The URL is never echoed: it may carry a password."""
        if not value:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in BROKER_SCHEMES:
            raise ValueError(f"the broker URL must start with one of {', '.join(s + '://' for s in BROKER_SCHEMES)}")
        return value

    @field_validator("fhir_system_base", "fhir_label_system")
    @classmethod
    def _absolute_uri(cls, value: str | None) -> str | None:
        """A FHIR ``system`` is an absolute URI; a relative one would make every exported code ambiguous."""
        if value is not None and not value.startswith(("https://", "http://", "urn:")):
            raise ValueError(f"{value!r} is not an absolute URI (https://..., http://... or urn:...)")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _backoff(self) -> Settings:
        if self.stream_backoff_max_seconds < self.stream_backoff_initial_seconds:
            raise ValueError("stream_backoff_max_seconds must be at least stream_backoff_initial_seconds")
        return self

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.job_heartbeat_seconds >= self.job_lease_seconds:
            raise ValueError("job_heartbeat_seconds must be shorter than job_lease_seconds (renewed before it ends)")
        return self

    @model_validator(mode="after")
    def _visibility_beyond_countdowns(self) -> Settings:
        """On Redis a webhook retry waits in the worker, unacknowledged, until its countdown ends; a visibility
        timeout shorter than the longest countdown would hand it out again and again while it waits."""
        if self.broker_visibility_timeout_seconds <= self.webhook_backoff_max_seconds:
            raise ValueError("broker_visibility_timeout_seconds must be longer than webhook_backoff_max_seconds")
        return self

    @model_validator(mode="after")
    def _retired(self) -> Settings:
        """WARDWATCH_ADMIN_TOKEN used to open the admin endpoints. Ignoring it silently would leave an operator
        believing it still does something, so a start-up with it set fails and says what replaced it."""
        if self.admin_token is not None:
            raise ValueError("WARDWATCH_ADMIN_TOKEN is retired: create an admin with `wardwatch users create "
                             "--role admin` and an API token with `wardwatch tokens create`, then unset it")
        return self

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'wardwatch.db'}"

    @property
    def pool_size(self) -> int:
        return self.db_pool_size or self.api_threads

    @property
    def embedded(self) -> bool:
        """No broker configured: tasks run in a thread pool inside the server process."""
        return not self.broker_url

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    def stream_destinations(self) -> DestinationPolicy:
        """Where stream readers may connect (checked at submission and before every connection)."""
        return DestinationPolicy.parse(self.stream_allowed_networks,
                                       allow_list_name="WARDWATCH_STREAM_ALLOWED_NETWORKS")

    def stream_reconnect(self) -> ReconnectPolicy:
        """Bounded by default: ``stream_max_reconnects`` consecutive failures end the stream job."""
        return ReconnectPolicy(initial_delay=self.stream_backoff_initial_seconds,
                               max_delay=self.stream_backoff_max_seconds,
                               max_attempts=self.stream_max_reconnects or None)

    def stream_archive_dir(self, recording_id: int) -> Path:
        """Where the live stream of ``recording_id`` is archived (segments and ``index.jsonl``)."""
        return self.media_dir / "recordings" / str(recording_id) / "archive"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected uploads, bounded by ``quarantine_max_bytes`` (``server.services.quarantine``)."""
        return self.data_dir / "quarantine"

    def secret_box(self) -> SecretBox:
        """The encrypter of secrets at rest (raises :class:`SecretKeyMissing` in production without keys)."""
        return SecretBox.from_settings(self.secret_keys, self.data_dir, production=self.production)

    def ensure_dirs(self) -> None:
        """Create the data directories (idempotent)."""
        for path in (self.data_dir, self.recordings_dir, self.media_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once from the environment."""
    return Settings()
