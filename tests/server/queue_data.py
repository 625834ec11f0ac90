"""Many events, fast: recordings and events written with bulk Core inserts (SQLAlchemy's batched
"insertmanyvalues", a thousand rows a statement), for the queue tests and the index choice at 100,000 events.

The mix is a ward's: most events flagged, a few reviewed, a handful clinician-added, rooms of several
recordings, and some recordings without a wall-clock start (their events have no ``start_wall``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, insert, select

from server.db.tables import Event, EventSource, EventStatus, ModelState, ModelVersion, Recording, RecordingStatus

LABELS = ("bed_exit", "fall", "rhythmic_movement", "caregiver_at_bedside")
STATUSES = ((EventStatus.flagged, 0.70), (EventStatus.confirmed, 0.15), (EventStatus.rejected, 0.10),
            (EventStatus.relabelled, 0.05))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Seeded:
    recording_ids: list[int]
    rooms: list[str]
    model_id: int


def bulk_events(engine: Engine, n_events: int, *, n_recordings: int = 200, n_rooms: int = 20, seed: int = 0,
                untimed_share: float = 0.05, batch: int = 10_000) -> Seeded:
    """Insert ``n_recordings`` recordings and ``n_events`` events spread over them (deterministic for ``seed``)."""
    rng = random.Random(seed)
    rooms = [f"room-{i:02d}" for i in range(n_rooms)]
    with engine.begin() as conn:
        model_id = conn.scalar(select(ModelVersion.id).where(ModelVersion.state == ModelState.active))
        if model_id is None:
            model_id = conn.scalar(insert(ModelVersion).values(
                name="bulk", architecture="tiny", class_names=list(LABELS), input_spec={},
                checkpoint_path="none", checkpoint_sha256="0" * 64, state=ModelState.active).returning(ModelVersion.id))
        first = (conn.scalar(select(func.max(Recording.id))) or 0) + 1
        recordings = [{"id": first + i, "source": f"bulk-{i}.mp4", "room": rooms[i % n_rooms],
                       "started_at": None if rng.random() < untimed_share else T0 + timedelta(hours=6 * i),
                       "duration": 3600.0, "status": RecordingStatus.scored, "warnings": [], "clip_count": 0,
                       "created_at": T0, "updated_at": T0}
                      for i in range(n_recordings)]
        conn.execute(insert(Recording), recordings)
        statuses, weights = zip(*STATUSES, strict=True)
        rows = []
        for _ in range(n_events):
            recording = recordings[rng.randrange(n_recordings)]
            start = rng.uniform(0, 3590)
            status = rng.choices(statuses, weights)[0]
            started = recording["started_at"]
            rows.append({
                "recording_id": recording["id"], "label": rng.choice(LABELS), "start": start, "end": start + 4.0,
                "start_wall": started + timedelta(seconds=start) if started else None,
                "end_wall": started + timedelta(seconds=start + 4.0) if started else None,
                "peak_score": round(rng.uniform(0.5, 1.0), 6), "peak_time": start + 2.0, "model_version_id": model_id,
                "source": EventSource.clinician if rng.random() < 0.01 else EventSource.model, "status": status,
                "reviewer": None if status == EventStatus.flagged else "bulk", "created_at": T0,
            })
            if len(rows) == batch:
                conn.execute(insert(Event), rows)
                rows = []
        if rows:
            conn.execute(insert(Event), rows)
    return Seeded([r["id"] for r in recordings], rooms, int(model_id))
