"""Property-based attack on the API from its own OpenAPI schema (schemathesis 4).

Every operation the app has (read from ``/openapi.json``, no list kept here) gets generated requests, valid
and invalid, against a real uvicorn on loopback with a seeded SQLite database: as an admin with a bearer
token, and, for the operations an admin may not do (reviewing), as a clinician. Every response must be a
non-5xx, with a documented status code, and its body must match the documented schema.

Deterministic (fixed seed, derandomised, no example database) and bounded (``MAX_EXAMPLES`` fuzzed cases per
operation, on top of the examples and coverage phases' own cases): about 1,500 requests. Hypothesis runs with no
deadline (schemathesis sets none), so a slow machine does not make it flaky.

Dates: every ``format: date-time`` input is generated from the whole range of datetimes with the extreme
offsets (±14:00), and the two values that have no UTC equivalent (9999-12-31T23:59:59-14:00,
0001-01-01T00:00:00+14:00) are tried first: they were a 500 on every date filter and on a recording's
``started_at``, and the stock generator (UTC-ish offsets, dates anywhere) reaches them only by chance.

Kept out, with why:
- the stateful phase (chains of calls linked by the schema): the schema declares no links, so it would add
  nothing but run time;
- the broker is a real Redis database of its own that no worker reads, so a fine-tune or stream the
  generator manages to start is queued, never run (no training on this CPU, no connection to a generated
  stream URL); it is emptied before and after.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from schemathesis.config import SchemathesisConfig

from server.api.security import api_routes, route_guards
from server.db.access_tables import Role
from server.db.session import session_scope
from server.main import create_app
from server.security.permissions import is_allowed
from server.services.api_tokens import resolve_token
from server.settings import Settings
from tests.accounts import token_for
from tests.conftest import REDIS_URL, running_server
from tests.server.access import seed

pytestmark = pytest.mark.redis

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))  # fuzzed cases per operation
SEED = 20260415
BROKER = f"{REDIS_URL}/13"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
SEEN: dict[tuple[str, str], Counter[int]] = {}  # (role, operation) -> status codes answered
NO_UTC_EQUIVALENT = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")
EXTREME_DATES_SENT: set[str] = set()  # operations that were sent one of NO_UTC_EQUIVALENT
_OFFSETS = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=14)),
            timezone(timedelta(hours=5, minutes=45))]
schemathesis.openapi.format("date-time", st.one_of(
    st.sampled_from(NO_UTC_EQUIVALENT),
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1899-12-31T23:59:59Z",
                     "3000-01-01T00:00:00+00:00"]),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                 timezones=st.sampled_from(_OFFSETS)).map(datetime.isoformat)))


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    })


@dataclass
class Caller:
    """A role's bearer token, minted again if a generated request revoked it (``DELETE /tokens/{id}``)."""

    app: Any
    role: str
    token: str = ""

    def headers(self) -> dict[str, str]:
        with session_scope(self.app.state.session_factory) as session:
            valid = bool(self.token) and resolve_token(session=session, secret=self.token, production=False)
        if not valid:
            self.token = token_for(self.app, self.role)
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Api:
    app: Any
    base: str
    admin: Caller
    clinician: Caller


def _admin_may(route: Any) -> bool:
    """Whether an admin passes the route's Guards (False for reviewing, which only clinicians do)."""
    return all(is_allowed(Role.admin, None, permission)
               for g in route_guards(route.dependant) for permission in g.permissions)


def _served_schema() -> tuple[Any, set[tuple[str, str]]]:
    """The OpenAPI document ``create_app`` serves (on a throwaway database, at collection: parametrisation needs
    the operations before any fixture runs), and the (method, path) pairs an admin's Guard refuses."""
    scratch = Path(tempfile.mkdtemp(prefix="wardwatch-openapi-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    app = create_app(Settings(data_dir=scratch / "data", broker_url=None, device="cpu"))
    refused = {(method.upper(), r.path) for r in api_routes(app.routes) for method in r.methods or ()
               if not _admin_may(r)}
    return schemathesis.openapi.from_dict(app.openapi(), config=_config()), refused


SCHEMA, ADMIN_REFUSED = _served_schema()
CLINICIAN_SCHEMA = SCHEMA.include(func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in ADMIN_REFUSED)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite by default; ``SCHEMATHESIS_DATABASE=postgres`` runs the same attack on a fresh PostgreSQL database
    (slower; it is what found the 32-bit INTEGER IDs)."""
    if os.environ.get("SCHEMATHESIS_DATABASE", "sqlite") != "postgres":
        yield f"sqlite:///{tmp_path_factory.mktemp('schemathesis-db') / 'wardwatch.db'}"
        return
    from tests.conftest import _admin_exec, _pg_url

    name = f"wardwatch_st_{uuid.uuid4().hex[:10]}"
    _admin_exec(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Api]:
    """One real server for the module (a fresh app per operation would triple the run time); the operations
    share its database, as clients of a real deployment do."""
    broker = redis.Redis.from_url(BROKER)
    broker.flushdb()
    settings = Settings(data_dir=tmp_path_factory.mktemp("schemathesis") / "data", database_url=database_url,
                        broker_url=BROKER, device="cpu")
    app = create_app(settings)
    with running_server(app) as base:
        seed(app)
        yield Api(app, base, Caller(app, "admin"), Caller(app, "clinician"))
    broker.flushdb()


def test_the_clinician_pass_is_not_empty() -> None:
    """Reviewing is refused to admins: those operations must still be attacked, as the clinician."""
    assert ADMIN_REFUSED
    assert {(op.ok().method.upper(), op.ok().path) for op in CLINICIAN_SCHEMA.get_all_operations()} == ADMIN_REFUSED


def _note_extreme_dates(case: schemathesis.Case) -> None:
    sent = [case.query, case.body] if isinstance(case.body, dict) else [case.query]
    if any(value in NO_UTC_EQUIVALENT for part in sent if part for value in part.values()):
        EXTREME_DATES_SENT.add(case.operation.label)


@SCHEMA.parametrize()
def test_every_operation_as_admin(case: schemathesis.Case, api: Api) -> None:
    _note_extreme_dates(case)
    response = case.call_and_validate(base_url=api.base, headers=api.admin.headers(), checks=CHECKS)
    SEEN.setdefault(("admin", case.operation.label), Counter())[response.status_code] += 1


@CLINICIAN_SCHEMA.parametrize()
def test_admin_refused_operations_as_clinician(case: schemathesis.Case, api: Api) -> None:
    _note_extreme_dates(case)
    response = case.call_and_validate(base_url=api.base, headers=api.clinician.headers(), checks=CHECKS)
    SEEN.setdefault(("clinician", case.operation.label), Counter())[response.status_code] += 1


def test_every_operation_got_past_its_guard() -> None:
    """Each operation was called, and at least one of its requests was let through to the route (not 401/403) by
    the role that may use it: an attack that only ever bounced off authorisation would prove little."""
    if not SEEN:
        pytest.skip("the schemathesis tests above did not run (deselected)")
    for result in SCHEMA.get_all_operations():
        operation = result.ok()
        role = "clinician" if (operation.method.upper(), operation.path) in ADMIN_REFUSED else "admin"
        statuses = SEEN.get((role, operation.label), Counter())
        assert sum(statuses.values()) > 0, f"{operation.label} was never called"
        assert set(statuses) - {401, 403}, f"{operation.label}: only refusals as {role}: {dict(statuses)}"


def _takes_a_date(operation: Any) -> bool:
    """Whether a query parameter or a body field of the operation is a date-time (read from the schema)."""
    def dated(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("format") == "date-time" or any(dated(v) for v in node.values())
        return isinstance(node, list) and any(dated(v) for v in node)
    raw = operation.definition.raw
    return dated([p for p in raw.get("parameters", []) if p.get("in") == "query"]) or dated(raw.get("requestBody"))


def test_every_date_input_was_sent_a_time_with_no_utc_equivalent() -> None:
    """The attack above did send the extreme dates to each operation that takes a date (and got no 5xx)."""
    if not SEEN:
        pytest.skip("the schemathesis tests above did not run (deselected)")
    dated = {result.ok().label for result in SCHEMA.get_all_operations() if _takes_a_date(result.ok())}
    assert {"GET /api/v1/events", "GET /api/v1/audit", "GET /api/v1/fhir/Bundle", "GET /api/v1/fhir/AuditEvent",
            "POST /api/v1/recordings"} <= dated
    assert dated <= EXTREME_DATES_SENT, f"never sent an extreme date: {sorted(dated - EXTREME_DATES_SENT)}"
