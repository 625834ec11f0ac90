"""Helpers of the review-workspace browser tests: one server per test module with the synthetic recording
scored by the real pipeline, seeding events straight into the database (for the keyboard triage, which needs
many), reading them back, and reading the overlay canvas's pixels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from server.db.session import session_scope
from server.db.tables import Clip, Event, ModelState, ModelVersion, Recording, RecordingStatus
from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import running_server
from tests.web.conftest import ARTIFACTS, sign_in, upload_and_score

#: the README's screenshots, rewritten by the browser tests
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

#: [weighted sum of the RGBA bytes, number of pixels with any alpha, width, height] of a canvas
CANVAS_DIGEST = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let sum = 0, seen = 0;
  for (let i = 0; i < d.length; i += 4) {
    sum += d[i] * 3 + d[i + 1] * 5 + d[i + 2] * 7 + d[i + 3];
    if (d[i + 3]) seen++;
  }
  return [sum, seen, c.width, c.height];
}"""


def canvas_digest(page: Page, canvas_id: str = "overlay-canvas") -> tuple[int, int, int, int]:
    return tuple(page.evaluate(CANVAS_DIGEST, canvas_id))  # type: ignore[return-value]


def seed_events(app: Any, *, room: str, count: int, duration: float = 600.0,
                gaps: list[tuple[float, float]] = ()) -> list[int]:  # type: ignore[assignment]
    """A scored recording in ``room`` with ``count`` flagged events of the active model, 20 s apart (and the
    live-stream outages ``gaps``, as the stream writes them into the warnings); returns the events' ids newest
    wall-clock first (the queue's default order)."""
    started = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    with session_scope(app.state.session_factory) as session:
        model = session.scalars(select(ModelVersion).where(ModelVersion.state == ModelState.active)).one()
        duration = max(duration, 20.0 * count + 20)
        recording = Recording(source="seeded.mp4", room=room, started_at=started, duration=duration, fps=10.0,
                              status=RecordingStatus.scored,
                              warnings=[f"stream gap {a:.1f}-{b:.1f} s" for a, b in gaps])
        session.add(recording)
        session.flush()
        events = []
        for i in range(count):
            start = 10.0 + 20 * i
            label = model.class_names[i % len(model.class_names)]
            events.append(Event(recording_id=recording.id, label=label, start=start, end=start + 4,
                                start_wall=started + timedelta(seconds=start),
                                end_wall=started + timedelta(seconds=start + 4),
                                peak_score=0.5 + 0.4 * i / max(1, count - 1), peak_time=start + 2,
                                model_version_id=model.id))
        session.add_all(events)
        session.flush()
        return [e.id for e in reversed(events)]


def copy_without_events(app: Any, recording_id: int, *, room: str) -> int:
    """A second recording of the same stored file with the same scored clips and no events: what a recording
    where the model flagged nothing looks like (the issue's motivating case). Returns its id."""
    with session_scope(app.state.session_factory) as session:
        def columns(row: Any, *skip: str) -> dict[str, Any]:
            return {c.key: getattr(row, c.key) for c in row.__mapper__.column_attrs if c.key not in ("id", *skip)}

        original = session.get(Recording, recording_id)
        copy = Recording(**{**columns(original), "room": room})
        session.add(copy)
        session.flush()
        clips = session.scalars(select(Clip).where(Clip.recording_id == recording_id)).all()
        session.add_all(Clip(**{**columns(clip, "recording_id"), "recording_id": copy.id}) for clip in clips)
        return copy.id


def event_row(app: Any, event_id: int) -> dict[str, Any] | None:
    """The event as the database holds it now (None: deleted)."""
    with session_scope(app.state.session_factory) as session:
        event = session.get(Event, event_id)
        if event is None:
            return None
        return {"status": event.status.value, "reviewer": event.reviewer, "reviewed_label": event.reviewed_label,
                "label": event.label, "note": event.note}


def delete_event(app: Any, event_id: int) -> None:
    with session_scope(app.state.session_factory) as session:
        session.delete(session.get(Event, event_id))


def workspace_server(tmp_path_factory: pytest.TempPathFactory, ward_video) -> Iterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    """A test module's server (used as its module-scoped ``ws`` fixture): the synthetic recording uploaded and
    scored by the real pipeline."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("workspace") / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        headers = bearer(app, "clinician")
        ensure_user(app, "clinician")
        recording = upload_and_score(base, app, ward_video.video, headers)
        events = httpx.get(f"{base}/api/v1/events", params={"recording": recording["id"]}, headers=headers).json()
        assert events["data"], "the pipeline flagged nothing in the synthetic recording"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield SimpleNamespace(app=app, base=base, headers=headers, recording=recording, events=events["data"])


def open_event(page: Page, ws: SimpleNamespace, event_id: int | None = None) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})  # the size of the README's screenshots
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    expect(page.locator(".event-item").first).to_be_visible()
    if event_id is not None:
        page.locator(f'.event-item[data-id="{event_id}"]').click()
        expect(page.locator("#event-title")).to_contain_text(f"event {event_id}")


def filter_room(page: Page, room: str) -> None:
    page.fill("#filter-room", room)
    page.press("#filter-room", "Enter")
    page.locator("#filter-room").blur()  # keys do nothing while the focus is in a field


def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "the database never showed the change"
        time.sleep(0.05)
    return value
