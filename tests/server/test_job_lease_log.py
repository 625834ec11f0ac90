"""The heartbeat's last word: a job its owner finished is no lost lease; one taken away is."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from server.db.migrate import upgrade
from server.db.session import make_engine, make_session_factory, session_scope
from server.job_lease import JobLease
from server.services import jobs
from server.settings import Settings


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, job_heartbeat_seconds=0.05,
                        job_lease_seconds=30)  # type: ignore[arg-type]
    return settings, make_session_factory(make_engine(url))


def _leased_job(factory, settings):  # type: ignore[no-untyped-def]
    owner = jobs.new_owner()
    with session_scope(factory) as session:
        job_id = jobs.create_job(session=session, kind=jobs.JobKind.finetune).id
    with session_scope(factory) as session:
        jobs.start_job(session=session, job_id=job_id, owner=owner, lease_seconds=settings.job_lease_seconds)
    return job_id, owner


def _wait(event, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_finished_job_is_not_reported_as_a_lost_lease(setup, caplog: pytest.LogCaptureFixture) -> None:
    settings, factory = setup
    job_id, owner = _leased_job(factory, settings)
    caplog.set_level(logging.DEBUG, logger="server.job_lease")
    with JobLease(factory, settings, job_id, owner) as lease:
        with session_scope(factory) as session:
            jobs.succeed_job(session=session, job_id=job_id, owner=owner)
        _wait(lease.lost)  # the next beat finds the lease gone with the job
        assert lease.lost.is_set()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("finished" in r.getMessage() for r in caplog.records)


def test_a_lease_taken_away_is_reported(setup, caplog: pytest.LogCaptureFixture) -> None:
    settings, factory = setup
    job_id, owner = _leased_job(factory, settings)
    with JobLease(factory, settings, job_id, owner) as lease:
        with session_scope(factory) as session:  # the sweeper's verdict on a worker it thought dead
            jobs.fail_job(session=session, job_id=job_id, reason="its worker was lost")
        _wait(lease.lost)
        assert lease.lost.is_set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lease lost" in w and "failed" in w for w in warnings), warnings
