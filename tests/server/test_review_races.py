"""Reviews and undos of one event at the same moment, on SQLite and PostgreSQL, through the real app (threads
released together by a barrier). The event's review columns must equal its latest standing review after every
race, and two undos of the same review must take back one review, never the one below it.

Before the fix, the event was read before its lock and only its id was locked: SQLAlchemy then wrote only the
columns that differed from its stale copy, and the event showed one review's status with the other's reviewer
(PostgreSQL: every round; SQLite: nearly every round). Two undos at once took back two reviews (PostgreSQL) or
one of them was a 500 (SQLite: the database trigger refused to mark an already-undone review again).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.tables import Event, EventReview
from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer
from tests.server.access import seed

ROUNDS = 12  # each race caught the bug in (nearly) every round: a dozen rounds make a miss negligible


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


Post = tuple[str, dict[str, Any] | None, dict[str, str]]  # url, JSON body (None: no body), headers


def _together(client: TestClient, *posts: Post) -> list[Any]:
    """Send ``posts`` from threads released at the same instant; the answers in order."""
    barrier = threading.Barrier(len(posts))

    def send(post: Post) -> Any:
        url, body, headers = post
        barrier.wait()
        return client.post(url, json=body, headers=headers)

    with ThreadPoolExecutor(len(posts)) as pool:
        return list(pool.map(send, posts))


def _shown_and_latest(client: TestClient, event_id: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What the event row says, and what its latest standing review says, read from the database."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        event = session.get(Event, event_id)
        latest = session.scalars(select(EventReview).where(EventReview.event_id == event_id,
                                                           EventReview.undone_at.is_(None))
                                 .order_by(EventReview.id.desc()).limit(1)).first()
        assert event is not None
        shown = (event.status.value, event.reviewed_label, event.note, event.reviewer, event.reviewed_at)
        if latest is None:
            return shown, ("flagged", None, None, None, None)
        return shown, (latest.decision.value, latest.label, latest.note, latest.reviewer, latest.created_at)


def _standing(client: TestClient, event_id: int) -> list[int]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(EventReview.id).where(EventReview.event_id == event_id,
                                                                 EventReview.undone_at.is_(None))
                                    .order_by(EventReview.id.desc())))


def test_two_reviews_at_once_leave_the_event_as_the_latest_review(client: TestClient) -> None:
    event_id = seed(client.app).event_id
    a = bearer(client.app, "clinician", username="nurse.a")
    b = bearer(client.app, "clinician", username="nurse.b")
    url = f"/api/v1/events/{event_id}/review"
    codes: Counter[int] = Counter()
    for round_ in range(ROUNDS):
        assert client.post(url, json={"decision": "rejected"}, headers=a).status_code == 200
        answers = _together(client, (url, {"decision": "confirmed", "note": f"a {round_}"}, a),
                            (url, {"decision": "relabelled", "label": "bed_exit", "note": f"b {round_}"}, b))
        codes.update(answer.status_code for answer in answers)
        shown, latest = _shown_and_latest(client, event_id)
        assert shown == latest, f"round {round_}: the event shows {shown}, its latest review is {latest}"
        # each answer showed the event as it was right after that review: the one that went last is what stays
        last = answers[0] if latest[3] == "nurse.a" else answers[1]
        assert (last.json()["status"], last.json()["reviewer"]) == latest[0:4:3]
    assert codes == {200: 2 * ROUNDS}


def test_two_undos_of_the_same_review_take_back_one(client: TestClient) -> None:
    """The client names the review it undoes: exactly one of the two succeeds, the other is a 409."""
    event_id = seed(client.app).event_id
    nurse = bearer(client.app, "clinician")
    for round_ in range(ROUNDS):
        for decision in ("confirmed", "rejected"):
            assert client.post(f"/api/v1/events/{event_id}/review", json={"decision": decision},
                               headers=nurse).status_code == 200
        before = _standing(client, event_id)
        undo = f"/api/v1/events/{event_id}/review/undo"
        answers = _together(client, *[(undo, {"review_id": before[0]}, nurse)] * 2)
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        assert "already undone" in next(a for a in answers if a.status_code == 409).json()["detail"]
        assert _standing(client, event_id) == before[1:], f"round {round_}: not exactly the named review undone"
        shown, latest = _shown_and_latest(client, event_id)
        assert shown == latest and latest[0] == "confirmed"


def test_a_double_clicked_undo_without_review_id_is_no_500_and_stays_consistent(client: TestClient) -> None:
    """The older form (no body): the review meant is the latest when the request arrived, so an undo that waited
    for a concurrent one is a 409. Never a 500, and the event always shows its latest standing review."""
    event_id = seed(client.app).event_id
    nurse = bearer(client.app, "clinician")
    codes: Counter[int] = Counter()
    for round_ in range(ROUNDS):
        for decision in ("confirmed", "rejected"):
            client.post(f"/api/v1/events/{event_id}/review", json={"decision": decision}, headers=nurse)
        before = _standing(client, event_id)
        answers = _together(client, *[(f"/api/v1/events/{event_id}/review/undo", None, nurse)] * 2)
        statuses = [a.status_code for a in answers]
        codes.update(statuses)
        assert set(statuses) <= {200, 409} and 200 in statuses, [a.text for a in answers]
        # as many reviews taken back as undos answered 200, each the latest at the time (never a silent extra)
        assert _standing(client, event_id) == before[statuses.count(200):], f"round {round_}"
        shown, latest = _shown_and_latest(client, event_id)
        assert shown == latest, f"round {round_}: the event shows {shown}, its latest review is {latest}"
    assert codes[409] > 0  # two at once are, in practice, one undo and one refusal


def test_a_review_and_an_undo_at_once_stay_consistent(client: TestClient) -> None:
    """nurse.a undoes her review while nurse.b reviews: whichever order the lock gives, the event matches."""
    event_id = seed(client.app).event_id
    a = bearer(client.app, "clinician", username="nurse.a")
    b = bearer(client.app, "clinician", username="nurse.b")
    for round_ in range(ROUNDS):
        mine = client.post(f"/api/v1/events/{event_id}/review", json={"decision": "confirmed", "note": "a"},
                           headers=a)
        assert mine.status_code == 200
        review_id = _standing(client, event_id)[0]
        undo, review = _together(client, (f"/api/v1/events/{event_id}/review/undo", {"review_id": review_id}, a),
                                 (f"/api/v1/events/{event_id}/review", {"decision": "rejected", "note": "b"}, b))
        assert review.status_code == 200 and undo.status_code in (200, 409), (undo.text, review.text)
        shown, latest = _shown_and_latest(client, event_id)
        assert shown == latest, f"round {round_}: the event shows {shown}, its latest review is {latest}"
        assert latest[3] == "nurse.b"  # b's review stands either way: a's undo came first or was refused
