"""The load benchmark's data: a throwaway PostgreSQL database with N events, a clinician and an API token.

Events go in by COPY and their three explanations each by one INSERT ... SELECT, so 100,000 events take
seconds. The events look like a ward's: a few hundred recordings across rooms, the
demo model's labels, start times over the last 30 days, most of them still flagged.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import insert

from server.bootstrap import ensure_active_model, open_database
from server.db.access_tables import Role
from server.db.session import session_scope
from server.db.tables import EventStatus, Recording, RecordingStatus
from server.security.permissions import usable_scopes
from server.services.api_tokens import create_token
from server.services.models import get_active_model
from server.services.users import create_user
from server.settings import Settings

STATUS_WEIGHTS = {EventStatus.flagged: 0.6, EventStatus.confirmed: 0.2, EventStatus.rejected: 0.15,
                  EventStatus.relabelled: 0.05}
METHODS = ("grad_cam", "guided_backprop", "guided_grad_cam")
PASSWORD = "load benchmark clinician password"


@dataclass(frozen=True)
class Seeded:
    database_url: str
    database_name: str
    token: str
    event_ids: tuple[int, int]  # first and last id
    labels: tuple[str, ...]
    newest: datetime


def admin_exec(admin_url: str, sql: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database beside ``admin_url`` (postgresql://.../postgres); returns (name, SQLAlchemy URL)."""
    name = f"wardwatch_load_{uuid.uuid4().hex[:8]}"
    admin_exec(admin_url, f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    admin_exec(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(settings: Settings, database_name: str, *, events: int, recordings: int = 400,
         seed_value: int = 7) -> Seeded:
    """Migrate, register the demo model, add a clinician with a token and ``events`` events."""
    engine, factory = open_database(settings)  # auto_migrate brings the schema to head
    ensure_active_model(settings, factory)
    rng = random.Random(seed_value)
    newest = datetime.now(UTC).replace(microsecond=0)
    with session_scope(factory) as session:
        version = get_active_model(session=session)
        assert version is not None
        labels = tuple(version.class_names)
        create_user(session=session, username="load-clinician", password=PASSWORD, role=Role.clinician)
        session.flush()
        _row, token = create_token(session=session, username="load-clinician", expires_days=None,
                                   scopes=usable_scopes(Role.clinician))
        rec_rows = [{"source": f"room{n % 40:02d}-{n}.mp4", "path": None, "room": f"room-{n % 40:02d}",
                     "patient_ref": f"enc-{n:05d}", "started_at": newest - timedelta(days=30) + timedelta(hours=n),
                     "fps": 10.0, "width": 112, "height": 112, "duration": 3600.0, "codec": "h264",
                     "status": RecordingStatus.scored, "clip_count": 1800}
                    for n in range(recordings)]
        rec_ids = list(session.scalars(insert(Recording).returning(Recording.id), rec_rows))
    _copy_events(settings.sqlalchemy_url, rng, rec_ids, labels, version.id, newest, events)
    with engine.connect() as conn:
        first, last = conn.exec_driver_sql("SELECT min(id), max(id) FROM event").one()
        conn.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # the planner's statistics and the visibility map, as autovacuum would leave them after a bulk load (and
        # so autovacuum does not start on the fresh rows in the middle of a measured run)
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return Seeded(database_url=settings.sqlalchemy_url, database_name=database_name, token=token,
                  event_ids=(int(first), int(last)), labels=labels, newest=newest)


EVENT_COLUMNS = ("recording_id", "label", "start", "end", "start_wall", "end_wall", "peak_score", "peak_time",
                 "model_version_id", "status", "reviewer", "reviewed_at", "reviewed_label", "key_frame_time",
                 "key_frame_path", "clip_path", "created_at")


def _copy_events(url: str, rng: random.Random, rec_ids: list[int], labels: tuple[str, ...], version_id: int,
                 newest: datetime, count: int) -> None:
    """Events by COPY (seconds, not minutes, for 100,000), then three explanations each, made by the server."""
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        # The per-status totals are kept by a row trigger on event (migration 0014): 100,000 +1 rows, folded by
        # the first queue request, would leave event_status_delta's pages behind (a bulk load, not what a ward
        # does). Load without it and write the totals as the migration's backfill does.
        conn.execute("ALTER TABLE event DISABLE TRIGGER event_status_delta_insert_delete")
        with conn.cursor().copy(f"COPY event ({columns}) FROM STDIN") as copy:
            for _ in range(count):
                row = _event_row(rng, rec_ids, labels, version_id, newest)
                copy.write_row([row[c] for c in EVENT_COLUMNS])
        conn.execute("INSERT INTO event_status_delta (status, n) SELECT status, count(*) FROM event GROUP BY status")
        conn.execute("ALTER TABLE event ENABLE TRIGGER event_status_delta_insert_delete")
        methods = ", ".join(f"('{m}')" for m in METHODS)
        # event.agreement is kept by a row trigger on explanation (migration 0014): for 300,000 rows at once, set
        # it with one statement instead, as the migration's backfill does
        conn.execute("ALTER TABLE explanation DISABLE TRIGGER explanation_agreement")
        conn.execute("INSERT INTO explanation (event_id, method, key_frame_time, overlay_path, video_path, agreement,"
                     " created_at) SELECT e.id, m.method, 1.0, 'media/' || e.id || '/' || m.method || '.png', NULL,"
                     " CASE WHEN m.method = 'guided_grad_cam' THEN round(random()::numeric, 3) END, now()"
                     f" FROM event e CROSS JOIN (VALUES {methods}) AS m(method)")
        conn.execute("UPDATE event SET agreement = x.agreement FROM explanation x WHERE x.event_id = event.id"
                     " AND x.agreement IS NOT NULL")  # one explanation per event has one
        conn.execute("ALTER TABLE explanation ENABLE TRIGGER explanation_agreement")


def _event_row(rng: random.Random, rec_ids: list[int], labels: tuple[str, ...], version_id: int,
               newest: datetime) -> dict[str, object]:
    start = rng.uniform(0, 3500)
    wall = newest - timedelta(seconds=rng.uniform(0, 30 * 86400))
    status = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
    reviewed = status is not EventStatus.flagged
    return {"recording_id": rng.choice(rec_ids), "label": rng.choice(labels), "start": start,
            "end": start + rng.uniform(2, 30), "start_wall": wall, "end_wall": wall + timedelta(seconds=10),
            "peak_score": rng.uniform(0.5, 1.0), "peak_time": start + 1, "model_version_id": version_id,
            "status": status.value, "reviewer": "someone" if reviewed else None,
            "reviewed_at": wall + timedelta(hours=1) if reviewed else None,
            "reviewed_label": rng.choice(labels) if status is EventStatus.relabelled else None,
            "key_frame_time": start + 1, "key_frame_path": f"media/k/{rng.randrange(10**9)}.png",
            "clip_path": f"media/c/{rng.randrange(10**9)}.mp4", "created_at": wall}


def settings_for(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, auto_migrate=True)
