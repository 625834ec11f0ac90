"""The command line: synth and ingest without a server, db upgrade, and the demo end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from server.cli import main
from tests.conftest import free_port


def test_synth_and_ingest_json(tmp_path: Path, capsys, ward_video) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--seconds", "8", "--seed", "3", "--width", "160",
                 "--height", "120"]) == 0
    assert (out / "ward.mp4").stat().st_size > 0 and (out / "annotations.json").exists()
    capsys.readouterr()

    assert main(["ingest", str(ward_video.video), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) >= {"clips", "frames", "duration", "events", "errors"}
    assert summary["clips"] >= 15 and abs(summary["duration"] - 36) < 1
    assert summary["events"] and {"label", "start", "end", "peak_score"} <= set(summary["events"][0])

    assert main(["ingest", str(ward_video.video), "--json", "--no-score", "--clip-seconds", "1",
                 "--sample-fps", "4", "--size", "64", "48"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == [] and summary["clips"] >= 30 and summary["frames"] >= 4 * 30


def test_ingest_bad_file_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "x.mp4"
    bogus.write_text("hello")
    assert main(["ingest", str(bogus), "--json"]) == 2
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 0 and "video" in summary["errors"][0].lower()


def test_db_upgrade_command(tmp_path: Path) -> None:
    env = {**os.environ, "WARDWATCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "server.cli", "db", "upgrade"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from server.db.migrate import head_revision

    assert f"revision {head_revision()}" in done.stdout and (tmp_path / "wardwatch.db").exists()


def test_demo_once(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "demo", "--once", "--seconds", "30", "--port", str(port),
         "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "events flagged" in done.stdout
    flagged = int(done.stdout.split("events flagged")[0].rsplit(";", 1)[1].split()[0])
    assert flagged >= 1


def test_demo_refuses_production(tmp_path: Path) -> None:
    env = {**os.environ, "WARDWATCH_ENVIRONMENT": "production"}
    done = subprocess.run([sys.executable, "-m", "server.cli", "demo", "--once", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "demo")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "refused in production" in done.stdout
    assert not (tmp_path / "demo").exists()


def test_ingest_a_stream_url(tmp_path: Path, capsys, ward_video) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-i", str(ward_video.video), "-c", "copy", "-f", "mpegts",
         f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        time.sleep(0.5)
        assert main(["ingest", f"tcp://127.0.0.1:{port}", "--json", "--max-reconnects", "1"]) == 0
    finally:
        server.kill()
        server.wait()
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] >= 15  # the whole 36 s file arrived as a stream
    assert summary["events"] and summary["errors"]  # the stream ended: reconnect gave up, said so


def test_experiment_atcon_as_the_readme_spells_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`wardwatch experiment atcon ...` (the experiment's name first) runs the ATCON experiment."""
    import torch

    from model.training.toy_data import write_shapes_dataset

    threads = torch.get_num_threads()
    write_shapes_dataset(tmp_path / "shapes", classes=2, per_class=10, size=16, seed=0)
    out = tmp_path / "r.json"
    try:
        code = main(["experiment", "atcon", "--data", f"imagefolder:{tmp_path / 'shapes'}", "--arch", "tiny2d",
                     "--images-per-class", "1", "--seeds", "1", "--epochs", "1", "--finetune-epochs", "1",
                     "--bootstrap", "20", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = json.loads(out.read_text())
    assert results["config"]["arch"] == "tiny2d" and results["runs"][0]["images_per_class"] == 1
    assert main(["experiment", "nonesuch"]) == 2
    assert "unknown experiment 'nonesuch'" in capsys.readouterr().err


def test_users_and_tokens_commands(db_url: str, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Bootstrap from a shell: the token printed alone on the last line works against a server on the same
    database, and stops working once revoked or once its user is disabled."""
    from fastapi.testclient import TestClient

    from server.main import create_app
    from server.settings import Settings, get_settings

    monkeypatch.setenv("WARDWATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDWATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        assert main(["users", "create", "--username", "Nurse.Jo", "--password", "long enough password",
                     "--role", "clinician"]) == 0
        assert "created clinician 'nurse.jo'" in capsys.readouterr().out
        assert main(["users", "create", "--username", "nurse.jo", "--password", "another long one",
                     "--role", "admin"]) == 2
        assert "already exists" in capsys.readouterr().err
        assert main(["users", "create", "--username", "short", "--password", "2short", "--role", "admin"]) == 2
        assert "at least 12 characters" in capsys.readouterr().err
        assert main(["tokens", "create", "--user", "nurse.jo", "--scopes", "admin"]) == 2
        assert "cannot use scope(s) admin" in capsys.readouterr().err
        assert main(["tokens", "create", "--user", "nurse.jo", "--scopes", "read:events", "review",
                     "--expires-days", "7", "--name", "ward tablet"]) == 0
        out = capsys.readouterr().out
        token = out.strip().splitlines()[-1]
        assert token.startswith("ww_") and len(token) > 40 and out.count(token) == 1
        token_id = int(out.split("token ", 1)[1].split()[0])

        assert main(["users", "list"]) == 0
        listing = capsys.readouterr().out
        assert "nurse.jo" in listing and "clinician" in listing and "active" in listing
        assert main(["tokens", "list"]) == 0
        listing = capsys.readouterr().out
        assert "read:events review" in listing and token not in listing

        app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None))
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {token}"}
            me = client.get("/api/v1/session", headers=headers).json()
            assert me["user"]["username"] == "nurse.jo" and me["scopes"] == ["read:events", "review"]
            assert main(["tokens", "revoke", str(token_id)]) == 0
            assert client.get("/api/v1/events", headers=headers).status_code == 401
            assert main(["tokens", "revoke", "999"]) == 2

            assert main(["tokens", "create", "--user", "nurse.jo", "--scopes", "read:events"]) == 0
            second = {"Authorization": f"Bearer {capsys.readouterr().out.strip().splitlines()[-1]}"}
            assert client.get("/api/v1/events", headers=second).status_code == 200
            assert main(["users", "disable", "nurse.jo"]) == 0
            assert client.get("/api/v1/events", headers=second).status_code == 401
            assert main(["users", "disable", "nobody"]) == 2
            assert main(["tokens", "create", "--user", "nurse.jo", "--scopes", "read:events"]) == 2

        from sqlalchemy import select

        from server.db.access_tables import AuditLog
        from server.db.session import session_scope
        with session_scope(app.state.session_factory) as session:
            trail = session.scalars(select(AuditLog).where(AuditLog.username == "system:cli")
                                    .order_by(AuditLog.id)).all()
            assert [e.action for e in trail] == ["cli_users_create", "cli_tokens_create", "cli_tokens_revoke",
                                                 "cli_tokens_create", "cli_users_disable"]
            assert trail[1].object_type == "api_token" and trail[1].object_id == str(token_id)
            assert "username=nurse.jo" in (trail[1].detail or "") and "review" in (trail[1].detail or "")
            assert all(e.outcome == "allowed" and e.user_id is None for e in trail)
    finally:
        get_settings.cache_clear()


def test_the_retired_admin_token_setting_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest
    from pydantic import ValidationError

    from server.settings import Settings

    monkeypatch.setenv("WARDWATCH_ADMIN_TOKEN", "s3cret")
    with pytest.raises(ValidationError, match="WARDWATCH_ADMIN_TOKEN is retired"):
        Settings()
