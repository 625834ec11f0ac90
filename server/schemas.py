"""API schemas, kept apart from the tables (STYLE.md #3): XCreate / XPublic / XsPublic{data, count}."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ingest.stream_urls import MASK, redact_url
from server.db.tables import (
    EventSource,
    EventStatus,
    JobStatus,
    ModelState,
    Outcome,
    RecordingStatus,
    ReviewDecision,
    Role,
)
from server.db.webhook_tables import DeliveryStatus, WebhookEventType
from server.security.permissions import Scope
from server.security.secret_box import is_encrypted

# Record IDs are INTEGER columns: 32-bit on PostgreSQL (64-bit on SQLite). A larger number in a path, query or
# body is refused at the edge with 422; it used to reach the driver (PostgreSQL: "integer out of range"; SQLite
# past 2**63: OverflowError), a 500 either way. The audit trail's IDs alone are BIGINT (MAX_BIG_ID).
MAX_ID = 2**31 - 1
MAX_BIG_ID = 2**63 - 1
MAX_NOTE = 4000  # characters of a review note
_SURROGATE = re.compile("[\ud800-\udfff]")
NO_NUL_PATTERN = "^[^\\u0000]*$"


def plain_text(value: str) -> str:
    """Refuse what no column can store: NUL (PostgreSQL text refuses it: a 500 there, silently kept by SQLite)
    and lone surrogates (not Unicode: the UTF-8 encoder of the driver or of the JSON answer fails)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    if _SURROGATE.search(value):
        raise ValueError("must not contain lone surrogates (\\ud800-\\udfff): not valid Unicode")
    return value


class _NoNulInSchema:
    """Says it in the OpenAPI document too (``pattern``), unless the field has a stricter pattern of its own."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault("pattern", NO_NUL_PATTERN)
        return out


def Text(max_length: int, *, min_length: int = 0, pattern: str | None = None) -> Any:  # noqa: N802 - a type
    """The one string type for client input (bodies, queries, paths, form fields): bounded, and plain text
    (``plain_text``). ``pattern``: a stricter rule of the field's own (it must exclude NUL itself)."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern),
                     AfterValidator(plain_text), _NoNulInSchema()]


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC. ValueError (a 422) for a time without a zone (ambiguous) and for one with no UTC
    equivalent: 9999-12-31T23:59:59-14:00 is past the last datetime Python has, 0001-01-01T00:00:00+14:00 before
    the first. Converting here, at the edge, means nothing after it (a bind parameter, the column type's own
    conversion) meets an OverflowError, which was a 500."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a time zone (Z or +hh:mm), e.g. 2026-01-01T08:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of UTC datetimes (0001-01-01T00:00:00Z to "
                         "9999-12-31T23:59:59.999999Z) once its time zone is applied") from None


# The one datetime type for client input (query parameters, JSON bodies, form fields): a time zone is required
# and the value arrives converted to UTC (``to_utc``).
UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]

# A recording's wall-clock start: its events' times are the start plus their offsets in the video, so a start at
# the edge of the range would overflow later, when the recording is scored or exported. Plausible years only.
WALL_CLOCK_MIN = datetime(1900, 1, 1, tzinfo=UTC)
WALL_CLOCK_MAX = datetime(3000, 1, 1, tzinfo=UTC)


def plausible_wall_clock(value: datetime) -> datetime:
    if not WALL_CLOCK_MIN <= value < WALL_CLOCK_MAX:
        raise ValueError(f"a recording's start must be in the years {WALL_CLOCK_MIN.year} to "
                         f"{WALL_CLOCK_MAX.year - 1} (UTC)")
    return value


WallClock = Annotated[UtcDatetime, AfterValidator(plausible_wall_clock)]


def _not_blank(note: str) -> str:
    """A blank note would read in the history as if something had been written: leave it out instead."""
    if not note.strip():
        raise ValueError("the note is empty: leave 'note' out instead")
    return note


#: a clinician's free-text note (reviews, clinician-added events): bounded plain text, never blank
Note = Annotated[Text(MAX_NOTE), AfterValidator(_not_blank)]


JSON_MAX_DEPTH = 4
JSON_MAX_ITEMS = 64
JSON_MAX_STRING = 1024


def _plain_json(value: Any, depth: int = 0) -> Any:
    """Free-form JSON a client sends (hyper-parameters) as the database's JSON column and our answers can hold
    it: plain-text strings and keys, finite numbers within 64 bits, bounded depth and size."""
    if depth > JSON_MAX_DEPTH:
        raise ValueError(f"nested deeper than {JSON_MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > JSON_MAX_STRING:
            raise ValueError(f"a string is longer than {JSON_MAX_STRING} characters")
        return plain_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not -MAX_BIG_ID - 1 <= value <= MAX_BIG_ID:
            raise ValueError("an integer is outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinite numbers are not JSON")
        return value
    if isinstance(value, list):
        if len(value) > JSON_MAX_ITEMS:
            raise ValueError(f"a list has more than {JSON_MAX_ITEMS} items")
        return [_plain_json(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if len(value) > JSON_MAX_ITEMS:
            raise ValueError(f"an object has more than {JSON_MAX_ITEMS} keys")
        for key in value:
            if len(key) > 64:
                raise ValueError("a key is longer than 64 characters")
            plain_text(key)
        return {key: _plain_json(item, depth + 1) for key, item in value.items()}
    raise ValueError(f"not a JSON value: {type(value).__name__}")


PlainJsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


class ErrorPublic(BaseModel):
    """Every refusal (4xx) but a validation error: what is wrong, in words."""

    detail: str


class FieldErrorPublic(BaseModel):
    """One invalid parameter or field (the offending input is never echoed: it may be a password)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorPublic(BaseModel):
    """422: the invalid fields, or a sentence when the check is one of the route's own."""

    detail: list[FieldErrorPublic] | str


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RecordingForm(BaseModel):
    """The form fields sent beside the file."""

    model_config = ConfigDict(extra="ignore")

    room: Text(128) | None = None
    patient_ref: Text(128) | None = Field(default=None, description="pseudonymous ID, never a name")
    started_at: WallClock | None = Field(default=None, description="wall-clock start, ISO 8601 with a time zone "
                                                                   "(Z or +hh:mm), years 1900 to 2999")
    allow_duplicate: bool = Field(default=False, description="accept content identical to an earlier upload")


class RecordingSource(RecordingForm):
    """JSON body of ``POST /recordings``: a file in the server's import directory, or a live stream URL."""

    model_config = ConfigDict(extra="forbid")

    path: Text(4096, min_length=1) | None = Field(default=None, description="a file relative to WARDWATCH_IMPORT_DIR")
    url: Text(4096, min_length=1) | None = Field(
        default=None, description="rtsp(s), rtmp(s), http(s) or tcp stream; the host must pass the destination "
                                  "policy (docs/streams.md)")

    @model_validator(mode="after")
    def _one_source(self) -> RecordingSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' (server-side import) or 'url' (live stream)")
        return self


class RecordingPublic(_FromRow):
    id: int
    source: str
    room: str | None
    patient_ref: str | None
    started_at: datetime | None
    fps: float | None
    width: int | None
    height: int | None
    duration: float | None
    codec: str | None
    size_bytes: int | None
    sha256: str | None
    status: RecordingStatus
    error: str | None
    warnings: list[str]
    clip_count: int
    created_at: datetime
    updated_at: datetime


class RecordingsPublic(BaseModel):
    data: list[RecordingPublic]
    count: int
    next_cursor: int | None = None


class ExplanationPublic(_FromRow):
    id: int
    event_id: int
    method: str
    key_frame_time: float
    agreement: float | None
    overlay_url: str
    video_url: str | None


class ExplanationsPublic(BaseModel):
    data: list[ExplanationPublic]
    count: int


class EventPublic(_FromRow):
    id: int
    recording_id: int
    label: str
    start: float
    end: float
    start_wall: datetime | None
    end_wall: datetime | None
    peak_score: float
    peak_time: float
    model_version_id: int
    source: EventSource = Field(description="model: flagged by the model; clinician: marked by a clinician")
    status: EventStatus
    reviewer: str | None
    reviewed_at: datetime | None
    note: str | None
    reviewed_label: str | None
    key_frame_time: float | None
    key_frame_url: str | None = None
    clip_url: str | None = None
    clip_start: float | None = Field(default=None, description="recording seconds at 0 s of the review clip: "
                                                               "player time t is recording time clip_start + t")
    agreement: float | None = None
    media_error: str | None = Field(default=None, description="why the review clip or the explanations are "
                                                              "missing, when the source could not give them")
    room: str | None = Field(default=None, description="the recording's room")
    created_at: datetime


class MapMethodsPublic(BaseModel):
    """Per-frame maps of each method: base64 of uint8 bytes, ``len(times) * height * width``, frame-major then
    row-major; 0 = nothing, 255 = the strongest value of that method over the event."""

    grad_cam: str
    guided_backprop: str
    guided_grad_cam: str


class EventMapsPublic(BaseModel):
    """The event's explanation maps at low resolution, one per sampled frame of its clips (drawn by the browser
    over the playing review clip: show the map with the latest time at or before the current recording time)."""

    event_id: int
    width: int = Field(description="map width in pixels (long side <= 32, the recording's aspect ratio)")
    height: int
    times: list[float] = Field(description="recording seconds of each map frame, ascending")
    methods: MapMethodsPublic
    agreement: float | None = Field(description="ATCON agreement of Grad-CAM and Guided Backprop, in [-1, 1]")


class TimelineEventPublic(BaseModel):
    id: int
    label: str
    reviewed_label: str | None
    status: EventStatus
    source: str = Field(description="model or clinician")
    start: float
    end: float
    peak_score: float


class TimelinePublic(BaseModel):
    """Per-class clip scores of a recording over ``[start, end]`` in equal buckets (the highest score of the
    clips overlapping each bucket, null where no clip does), its events overlapping the range, and the outages
    of a live stream."""

    recording_id: int
    duration: float
    start: float
    end: float
    classes: list[str]
    times: list[float] = Field(description="bucket centres, recording seconds")
    scores: dict[str, list[float | None]]
    events: list[TimelineEventPublic]
    gaps: list[tuple[float, float]] = Field(description="[start, end] seconds of live-stream outages")


class StatusCountsPublic(BaseModel):
    flagged: int
    confirmed: int
    rejected: int
    relabelled: int


class EventsPublic(BaseModel):
    """A page of the queue. ``count`` (every filter) and ``counts`` (per status, every filter but the status)
    are given on the first page only (no cursor), null on the pages after it."""

    data: list[EventPublic]
    count: int | None = None
    counts: StatusCountsPublic | None = None
    next_cursor: str | None = Field(default=None, description="opaque: pass it back as ``cursor`` with the same "
                                                              "filters and sort for the next page")


class ClinicianEventIn(BaseModel):
    """An event the model missed, marked by a clinician on a recording: stored confirmed, with them as reviewer."""

    model_config = ConfigDict(extra="forbid")

    label: Text(64, min_length=1) = Field(description="one of the classes of the model version that scored the "
                                                      "recording (the active model if none has)")
    start: float = Field(ge=0, allow_inf_nan=False, description="recording seconds")
    end: float = Field(ge=0, allow_inf_nan=False, description="recording seconds, after start, at most the "
                                                              "recording's duration")
    note: Note | None = Field(default=None, description="leave it out rather than send ''")

    @model_validator(mode="after")
    def _ordered(self) -> ClinicianEventIn:
        if self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        return self


class ReviewIn(BaseModel):
    """A clinician's decision on a flagged event."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirmed", "rejected", "relabelled"]
    label: Text(64, min_length=1) | None = Field(
        default=None, description="relabels only: one of the classes of the model version that flagged the event "
                                  "(its own label included)")
    note: Note | None = Field(default=None, description="leave it out rather than send ''")
    # No "reviewer" field: the reviewer is the signed-in clinician, never what the client claims.

    @model_validator(mode="after")
    def _label_for_relabel(self) -> ReviewIn:
        if self.decision == "relabelled" and not self.label:
            raise ValueError("a relabelled decision needs the new 'label'")
        if self.decision != "relabelled" and self.label is not None:
            raise ValueError("'label' is only accepted with decision 'relabelled'")
        return self


class UndoIn(BaseModel):
    """Optional body of ``POST /events/{id}/review/undo``: which review the client means to take back."""

    model_config = ConfigDict(extra="forbid")

    review_id: int | None = Field(
        default=None, ge=1, le=MAX_ID,
        description="the review the client saw as the event's latest (from GET .../reviews): the undo is refused "
                    "(409) unless it is still the caller's latest standing review, so a repeated or double-clicked "
                    "undo never takes back the review below it. Left out: the caller's latest standing review.")


class EventReviewPublic(_FromRow):
    """One entry of an event's review history. ``undone_at`` set: taken back, no longer the event's state."""

    id: int
    event_id: int
    decision: ReviewDecision
    label: str | None = Field(description="the new label of a relabel; None otherwise")
    note: str | None
    reviewer: str
    reviewer_id: int | None
    token_id: int | None = Field(description="the API token it came through; None: a browser session")
    created_at: datetime
    undone_at: datetime | None
    undone_by: str | None


class EventReviewsPublic(BaseModel):
    data: list[EventReviewPublic]
    count: int
    next_cursor: int | None = None


class ModelVersionPublic(_FromRow):
    id: int
    name: str
    architecture: str
    class_names: list[str]
    input_spec: dict
    checkpoint_sha256: str
    metrics: dict
    parent_id: int | None
    state: ModelState
    created_at: datetime


def redact_url_secrets(url: str) -> str:
    """``url`` without what may be a secret: the user-info (``user:password@``) becomes ``***@`` and every query
    value ``***`` (signed URLs, ``?token=``); the scheme, host, port and path stay, so an admin can tell streams
    apart. (One rule for the API, the recording's ``source`` and log lines: :func:`ingest.stream_urls.redact_url`.)"""
    return redact_url(url)


def _redacted(value: Any) -> Any:
    if isinstance(value, str) and is_encrypted(value):
        return MASK  # ciphertext is of no use to a reader of the API, and the key might leak one day
    if isinstance(value, str) and "://" in value:
        return redact_url_secrets(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


class JobPublic(_FromRow):
    id: int
    kind: str
    status: JobStatus
    progress: float
    params: dict = Field(description="the job's parameters; URLs without credentials or query values, encrypted "
                                     "values (a stream's URL) as ***")
    result: dict | None
    error: str | None
    recording_id: int | None
    attempts: int = Field(description="how often a worker started it (a job whose worker died is re-queued)")
    parent_id: int | None = Field(default=None, description="a segment job's scoring job (kind segment)")
    segment: int | None = Field(default=None, description="a segment job's number within its recording (0, 1, ...)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("params", mode="after")
    @classmethod
    def _no_url_secrets(cls, params: dict) -> dict:
        """The job row keeps the stream URL encrypted (the worker opens it); nobody reads it back over the API."""
        return _redacted(params)


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    mode: Literal["embedded", "broker"]


# TrainConfig fields a fine-tune job may not set: paths on the server, worker processes, the device.
SERVER_OWNED_HYPERPARAMETERS = frozenset({"checkpoint_path", "tensorboard_dir", "resume", "device", "num_workers"})


class FinetuneJobCreate(BaseModel):
    """An admin's fine-tune request. Hyper-parameters are ``model.training.config.TrainConfig`` fields."""

    model_config = ConfigDict(extra="forbid")

    base_model_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="default: the active model")
    mode: Literal["alternating", "supervised", "unsupervised", "combined"] = "alternating"
    hyperparameters: PlainJsonObject = Field(default_factory=dict, examples=[{"epochs": 5, "lr": 1e-5, "alpha": 8}])
    recording_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None, max_length=10_000, description="default: every scored recording")
    pretrained: Text(128, pattern=r"^torchvision:[a-z0-9_]+(:[A-Za-z0-9_]+)?$") | None = Field(
        default=None,
        description="start from these torchvision weights (resnet18 | resnet50 | r3d_18, read from the server's torch "
        "hub cache, never downloaded) with a new head, instead of the base model's weights; the base gives the "
        "architecture, classes and input",
        examples=["torchvision:r3d_18"],
    )
    max_unlabelled: int = Field(default=2000, ge=0, le=1_000_000)
    validation_fraction: float = Field(default=0.25, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="NumPy and PyTorch accept 32-bit seeds")

    @field_validator("hyperparameters", mode="after")
    @classmethod
    def _not_server_owned(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """Where files go and which processes run is the server's business, not a request's."""
        if owned := sorted(set(hyperparameters) & SERVER_OWNED_HYPERPARAMETERS):
            raise ValueError(f"{', '.join(owned)}: set by the server, not per job")
        return hyperparameters


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next_cursor: int | None = None


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Text(64, min_length=1)
    password: Text(256, min_length=1)


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role


class SessionPublic(BaseModel):
    """Who a request acts for. ``csrf_token``: send it as ``X-CSRF-Token`` on every cookie-authenticated write."""

    user: UserPublic
    auth: Literal["session", "token"]
    csrf_token: str | None = None
    expires_at: datetime | None = None
    idle_expires_at: datetime | None = None
    token_id: int | None = None
    scopes: list[str] | None = None
    permissions: list[str]


class AuditEntryPublic(_FromRow):
    id: int
    at: datetime
    user_id: int | None
    username: str | None
    role: str | None
    token_id: int | None
    action: str
    object_type: str | None
    object_id: str | None
    outcome: Outcome
    status_code: int | None
    detail: str | None
    client_address: str | None
    request_id: str | None


class AuditPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int | None = Field(default=None, description="total matching, only with count=true")
    next_cursor: int | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Text(64, min_length=2)
    password: Text(256, min_length=12)
    role: Role


class UserAdminPublic(_FromRow):
    id: int
    username: str
    role: Role
    active: bool
    demo: bool
    created_at: datetime
    disabled_at: datetime | None


class UsersPublic(BaseModel):
    data: list[UserAdminPublic]
    count: int


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Text(64, min_length=1) = Field(description="the user the token acts for")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_days: int | None = Field(default=90, ge=1, le=3650, description="null: never expires")
    name: Text(128) | None = Field(default=None, description="what it is for, e.g. the system using it")


class TokenPublic(BaseModel):
    id: int
    username: str
    name: str | None
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once, now: only its digest is stored")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class WebhookCreate(BaseModel):
    """An admin's subscription: where to POST and which event types."""

    model_config = ConfigDict(extra="forbid")

    url: Text(2000, min_length=1) = Field(description="http(s)://..., without user:password@",
                                          examples=["https://his.example.org/wardwatch/hooks"])
    events: list[WebhookEventType] = Field(min_length=1, max_length=len(WebhookEventType))
    description: Text(128) | None = Field(default=None, description="which system this is")


class WebhookPublic(BaseModel):
    """A subscription, never its secret; the URL without credentials or query string (it may hold a token)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    events: list[WebhookEventType]
    description: str | None
    active: bool
    created_by_user_id: int | None
    created_at: datetime
    deactivated_at: datetime | None

    @field_validator("url", mode="after")
    @classmethod
    def _redacted(cls, url: str) -> str:
        return redact_url_secrets(url)


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="the signing secret, shown once, now: only an encrypted copy is kept")


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    count: int


class WebhookAttemptPublic(_FromRow):
    number: int
    started_at: datetime
    timestamp: int = Field(description="X-Wardwatch-Timestamp of this attempt (Unix seconds)")
    status_code: int | None
    error: str | None = Field(description="null with a null status code: the sender stopped mid-attempt")
    duration_ms: int | None


class WebhookDeliveryPublic(_FromRow):
    id: int
    uuid: str = Field(description="the payload's id (X-Wardwatch-Delivery)")
    subscription_id: int
    event_type: WebhookEventType
    event_id: int
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    retry_of_id: int | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[WebhookAttemptPublic]


class WebhookDeliveriesPublic(BaseModel):
    data: list[WebhookDeliveryPublic]
    count: int
    next_cursor: int | None = None
