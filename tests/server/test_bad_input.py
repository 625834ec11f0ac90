"""Every bad input gets a clear 4xx, on SQLite and on PostgreSQL: integers past 64 bits, NUL characters and lone
surrogates in text, non-JSON numbers, oversized bodies, malformed multipart. Each of these used to be a 500 on
at least one of the two databases (SQLite: OverflowError; PostgreSQL: NUL in text; both: a multipart boundary
over 256 characters, a surrogate dict key echoed in a 422)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.db.access_tables import AuditLog
from server.db.tables import Event, Job, Recording
from server.main import create_app
from server.schemas import MAX_ID, NO_NUL_PATTERN
from server.settings import Settings
from tests.accounts import bearer
from tests.server.access import Seeded, seed

BIG = MAX_ID + 1  # one past the largest ID: PostgreSQL's INTEGER is 32-bit ("integer out of range": a 500)
HUGE = 2**70  # past any 64-bit integer (SQLite: OverflowError, a 500)


@pytest.fixture
def rows(client: TestClient) -> Seeded:
    return seed(client.app)


def _json(client: TestClient, method: str, url: str, raw: bytes, headers: dict[str, str] | None = None) -> Any:
    """Send ``raw`` as the JSON body, byte for byte (escapes such as \\ud800 or NaN reach the server as written)."""
    return client.request(method, url, content=raw, headers={"Content-Type": "application/json", **(headers or {})})


def _refused(answer: Any, status: int = 422, words: str | None = None) -> None:
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text)
    assert answer.json()["detail"], answer.text
    if words is not None:
        assert words in str(answer.json()["detail"]), answer.text


def _counts(client: TestClient) -> tuple[int, int, int]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Recording, Event, Job))  # type: ignore[return-value]


def test_ids_past_their_column_are_422(client: TestClient, rows: Seeded) -> None:
    admin = bearer(client.app, "admin")
    for url in (f"/api/v1/recordings/{BIG}", f"/api/v1/recordings/{2**63}", f"/api/v1/events?recording={2**63}",
                f"/api/v1/events/{BIG}", f"/api/v1/events/{HUGE}/explanations",
                f"/api/v1/jobs/{BIG}", f"/api/v1/explanations/{BIG}/overlay.png", f"/api/v1/events?cursor={BIG}",
                f"/api/v1/events?recording={BIG}", f"/api/v1/recordings?cursor={HUGE}", f"/api/v1/jobs?cursor={BIG}",
                f"/api/v1/audit?user_id={BIG}", f"/api/v1/audit?cursor={2**63}", f"/api/v1/events?limit={BIG}"):
        _refused(client.get(url, headers=admin))
    _refused(client.post(f"/api/v1/models/{BIG}/activate", headers=admin))
    _refused(client.delete(f"/api/v1/tokens/{BIG}", headers=admin))
    _refused(client.post(f"/api/v1/events/{BIG}/review", json={"decision": "confirmed"}))
    for body in ({"base_model_id": BIG}, {"recording_ids": [rows.recording_id, HUGE]}, {"seed": HUGE},
                 {"max_unlabelled": BIG}, {"hyperparameters": {"epochs": HUGE}}, {"base_model_id": -1}):
        _refused(client.post("/api/v1/finetune-jobs", json=body, headers=admin))
    _refused(client.post("/api/v1/tokens", json={"username": "test-admin", "scopes": ["admin"], "expires_days": BIG},
                         headers=admin))
    assert _counts(client) == (1, 1, 1)  # nothing was created on the way
    assert client.get(f"/api/v1/events/{MAX_ID}").status_code == 404  # the largest valid ID is merely unknown
    assert client.get(f"/api/v1/audit?cursor={2**62}", headers=admin).status_code == 200  # the trail's IDs: BIGINT


def test_nul_in_any_text_is_422(client: TestClient, rows: Seeded) -> None:
    """PostgreSQL refuses NUL in text (a 500 there); SQLite stored it silently. Now both refuse it at the edge."""
    admin = bearer(client.app, "admin")
    event = f"/api/v1/events/{rows.event_id}"
    for body in ({"decision": "confirmed", "note": "fell\x00"}, {"decision": "relabelled", "label": "\x00"}):
        _refused(client.post(f"{event}/review", json=body), words="NUL")
    for url in ("/api/v1/events?label=fall%00", "/api/v1/jobs?kind=%00", "/api/v1/audit?user=a%00",
                "/api/v1/audit?action=%00x", "/api/v1/audit?object_type=%00", "/api/v1/audit?object_id=1%00"):
        _refused(client.get(url, headers=admin), words="NUL")
    _refused(client.post("/api/v1/users/a%00b/disable", headers=admin), words="NUL")
    _refused(client.post("/api/v1/users", json={"username": "nurse\x00", "password": "long enough pass phrase",
                                                "role": "clinician"}, headers=admin), words="NUL")
    _refused(client.post("/api/v1/tokens", json={"username": "test-admin", "scopes": ["admin"], "name": "ci\x00"},
                         headers=admin), words="NUL")
    _refused(client.post("/api/v1/session", json={"username": "test-admin\x00", "password": "x"}), words="NUL")
    _refused(client.post("/api/v1/recordings", json={"url": "rtsp://cam.example/live\x00"}), words="NUL")
    _refused(client.post("/api/v1/recordings", json={"path": "a\x00.mp4"}), words="NUL")
    _refused(client.post("/api/v1/recordings", data={"room": "icu\x00"}, files={"file": ("a.mp4", b"\x00" * 64)}),
             words="NUL")
    _refused(client.post("/api/v1/finetune-jobs", json={"hyperparameters": {"device\x00": "cpu"}}, headers=admin),
             words="NUL")
    assert client.get(event).json()["status"] == "flagged"
    assert _counts(client) == (1, 1, 1)


def test_lone_surrogates_and_non_json_numbers_are_422(client: TestClient, rows: Seeded) -> None:
    admin = bearer(client.app, "admin")
    review = f"/api/v1/events/{rows.event_id}/review"
    _refused(_json(client, "POST", review, b'{"decision": "confirmed", "note": "a\\ud800b"}'))
    _refused(_json(client, "POST", review, b'{"decision": "relabelled", "label": "\\udfff"}'))
    _refused(_json(client, "POST", "/api/v1/users", b'{"username": "x\\ud800y", "password": "p", "role": "admin"}',
                   admin))
    # A dict key: validated by our own check, and a 422 naming it must still encode as UTF-8.
    for raw in (b'{"hyperparameters": {"x\\ud800": 1}}', b'{"hyperparameters": {"lr": NaN}}',
                b'{"hyperparameters": {"lr": Infinity}}', b'{"hyperparameters": {"atcon": {"a": [[[[[1]]]]]}}}',
                b'{"hyperparameters": {"epochs": "\\u0000"}}', b'{"validation_fraction": NaN}'):
        answer = _json(client, "POST", "/api/v1/finetune-jobs", raw, admin)
        _refused(answer)
        answer.content.decode("utf-8")  # the answer itself is valid UTF-8
    assert _counts(client) == (1, 1, 1)


def test_server_owned_hyperparameters_are_refused(client: TestClient) -> None:
    """An admin's request may not choose where the server writes files or how many processes it starts."""
    admin = bearer(client.app, "admin")
    for key, value in (("tensorboard_dir", "/etc"), ("checkpoint_path", "/tmp/x.pt"), ("num_workers", 64),
                       ("device", "cuda:7")):
        _refused(client.post("/api/v1/finetune-jobs", json={"hyperparameters": {key: value}}, headers=admin),
                 words=f"{key}: set by the server")


def test_the_refusal_of_a_nul_path_is_audited_not_503(client: TestClient) -> None:
    """An anonymous request is refused before validation, and its audit entry names the path parameter: a NUL
    there failed the insert on PostgreSQL, and a refusal whose entry cannot be written is answered 503."""
    anonymous = TestClient(client.app)
    answer = anonymous.post("/api/v1/users/bad%00name/disable")
    assert answer.status_code == 401, answer.text
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        entry = session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
    assert entry is not None and entry.status_code == 401 and entry.object_id == "bad\ufffdname"


def _multipart(boundary: str, *parts: bytes) -> bytes:
    return b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts) \
        + b"--" + boundary.encode() + b"--\r\n"


def _file_part(filename: bytes = b"a.mp4", data: bytes = b"not a video") -> bytes:
    return (b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            b"Content-Type: video/mp4\r\n\r\n" + data)


def test_malformed_multipart_is_422_and_leaves_nothing(client: TestClient) -> None:
    def post(boundary: str, body: bytes) -> Any:
        return client.post("/api/v1/recordings", content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    for boundary in ("b" * 300, "b" * 71, "b@c", "b[c]"):
        _refused(post(boundary, _multipart(boundary, _file_part())), words="boundary")
    many = [b'Content-Disposition: form-data; name="f%d"\r\n\r\nx' % i for i in range(40)]
    _refused(post("xyz", _multipart("xyz", *many, _file_part())), words="parts")
    _refused(post("xyz", _multipart("xyz", _file_part(filename=b"a\x00b.mp4"))), words="NUL")
    _refused(post("xyz", _multipart("xyz", _file_part(filename=b"a" * 300 + b".mp4"))), words="longer than")
    # 70 characters is the RFC's maximum: accepted, and the file is then refused as what it is (not a video).
    answer = post("b" * 70, _multipart("b" * 70, _file_part()))
    _refused(answer, words="not a video")
    data_dir = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    assert not [p for p in data_dir.rglob("*") if p.is_file() and p.parts[-2:-1] != ("quarantine",)
                and ("incoming" in p.parts or "recordings" in p.parts)]


LATE = "9999-12-31T23:59:59-14:00"  # past datetime.max once in UTC (OverflowError: a 500 on both databases)
EARLY = "0001-01-01T00:00:00+14:00"  # before datetime.min once in UTC
OUT_OF_RANGE = "outside the range of UTC datetimes"


def test_times_with_no_utc_equivalent_are_422(client: TestClient, rows: Seeded) -> None:
    """Every datetime a client sends is converted to UTC at the edge (``server.schemas.UtcDatetime``); a time
    whose zone takes it past year 9999 or before year 1 used to reach the column type's ``astimezone``."""
    admin = bearer(client.app, "admin")
    queries = [("/api/v1/events", "since"), ("/api/v1/events", "until"), ("/api/v1/audit", "since"),
               ("/api/v1/audit", "until"), ("/api/v1/fhir/Bundle", "since"), ("/api/v1/fhir/AuditEvent", "since"),
               ("/api/v1/fhir/AuditEvent", "until")]
    for url, name in queries:
        for value in (LATE, EARLY):
            _refused(client.get(url, params={name: value}, headers=admin), words=OUT_OF_RANGE)
        _refused(client.get(url, params={name: "2026-01-01T08:00:00"}, headers=admin), words="needs a time zone")
        for value in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59+14:00"):
            answer = client.get(url, params={name: value}, headers=admin)  # the very ends of the range are fine
            assert answer.status_code == 200, (url, name, value, answer.text)

    stream = {"url": "rtsp://camera.example/ward", "room": "12"}
    for started_at, words in ((EARLY, OUT_OF_RANGE), (LATE, OUT_OF_RANGE), ("2026-01-01T08:00:00", "time zone"),
                              ("1899-12-31T23:59:59Z", "years 1900 to 2999"),
                              ("3000-01-01T00:00:00Z", "years 1900 to 2999")):
        _refused(client.post("/api/v1/recordings", json={**stream, "started_at": started_at}), words=words)
        _refused(client.post("/api/v1/recordings", json={"path": "ward.mp4", "started_at": started_at}), words=words)
        form = _multipart("xyz", b'Content-Disposition: form-data; name="started_at"\r\n\r\n' + started_at.encode(),
                          _file_part())
        _refused(client.post("/api/v1/recordings", content=form,
                             headers={"Content-Type": "multipart/form-data; boundary=xyz"}), words=words)
    assert _counts(client) == (1, 1, 1)  # nothing was kept, not even a failed recording


def test_every_datetime_query_parameter_refuses_times_with_no_utc_equivalent(client: TestClient) -> None:
    """Read from the OpenAPI document, so a date-time parameter added later is held to it too."""
    admin = bearer(client.app, "admin")
    document = client.app.openapi()  # type: ignore[attr-defined]
    checked = []
    for path, item in document["paths"].items():
        operation = item.get("get")
        if operation is None or "{" in path:
            continue
        for parameter in operation.get("parameters", []):
            options = parameter["schema"].get("anyOf", [parameter["schema"]])
            if parameter["in"] == "query" and any(o.get("format") == "date-time" for o in options):
                for value in (LATE, EARLY):
                    _refused(client.get(path, params={parameter["name"]: value}, headers=admin), words=OUT_OF_RANGE)
                checked.append(f"{path}?{parameter['name']}")
    assert len(checked) >= 7, checked


def test_oversized_json_bodies_are_413(client: TestClient) -> None:
    admin = bearer(client.app, "admin")
    big = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    _refused(_json(client, "POST", "/api/v1/users", big, admin), status=413, words="larger than")
    chunked = client.post("/api/v1/users", headers={**admin, "Content-Type": "application/json"},
                          content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]))
    _refused(chunked, status=413)  # no Content-Length: refused as it arrives, never buffered whole
    _refused(_json(client, "POST", "/api/v1/recordings", b'{"path": "' + b"a" * 100_000 + b'"}'), status=413)
    assert client.get("/api/v1/health").status_code == 200


# --- the schema says it, for every route (also the ones added later) --------------------------------------------


def _strings_and_integers(schema: Any, where: str, components: dict[str, Any]) -> list[tuple[str, dict]]:
    """Every string and integer leaf of a request schema, with where it is."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _strings_and_integers(components[name], f"{where}<{name}>", components)
    found: list[tuple[str, dict]] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for index, option in enumerate(schema.get(key, [])):
            found += _strings_and_integers(option, f"{where}|{index}", components)
    if schema.get("type") == "object":
        for name, prop in schema.get("properties", {}).items():
            found += _strings_and_integers(prop, f"{where}.{name}", components)
        if isinstance(schema.get("additionalProperties"), dict):
            found += _strings_and_integers(schema["additionalProperties"], f"{where}.*", components)
    if schema.get("type") == "array":
        found += _strings_and_integers(schema.get("items", {}), f"{where}[]", components)
    if schema.get("type") in ("string", "integer"):
        found.append((where, schema))
    return found


def test_every_text_and_integer_input_is_bounded_in_the_schema(tmp_path: Any) -> None:
    """Each string a client sends is length-bounded and excludes NUL (or is an enum, a date-time, the uploaded
    file); each integer has a range. Read from the OpenAPI document, so a new route is held to it too."""
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    document = app.openapi()
    components = document["components"]["schemas"]
    leaves: list[tuple[str, dict]] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                leaves += _strings_and_integers(parameter["schema"], f"{label} {parameter['name']}", components)
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                leaves += _strings_and_integers(content["schema"], f"{label} ({media})", components)
    assert len(leaves) > 40
    unbounded = []
    for where, leaf in leaves:
        if leaf["type"] == "integer":
            if "maximum" not in leaf or "minimum" not in leaf:
                unbounded.append(where)
        elif not ("enum" in leaf or "const" in leaf or leaf.get("format") in ("date-time", "binary")):
            if "maxLength" not in leaf or not (leaf.get("pattern") == NO_NUL_PATTERN or "^" in leaf.get("pattern", "")):
                unbounded.append(where)
    assert not unbounded, f"use server.schemas.Text / a bounded int for: {unbounded}"
