"""``wardwatch demo``: a synthetic ward recording goes through the real server and shows up in the browser.

Everything runs embedded (SQLite, in-process worker, CPU). The recording is uploaded over HTTP like a hospital
system would, so the demo exercises the same path as production.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from ingest.synthetic import SynthConfig, generate
from server.db.access_tables import Role
from server.db.session import session_scope
from server.main import served_app
from server.security.permissions import Scope
from server.services.api_tokens import create_token
from server.services.users import create_user
from server.serving import uvicorn_config
from server.settings import Settings

log = logging.getLogger(__name__)
MARKER = ".wardwatch-demo"


def _fresh_data_dir(data_dir: Path) -> None:
    """Start from an empty demo directory; refuse to wipe a directory the demo did not create."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(f"{data_dir} exists and was not made by `wardwatch demo`; pass another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by wardwatch demo; safe to delete\n")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class DemoAccounts:
    clinician: tuple[str, str]
    admin: tuple[str, str]
    upload_token: str


def create_demo_accounts(settings: Settings, factory: sessionmaker[Session]) -> DemoAccounts:
    """A clinician and an admin with fresh random passwords, and the token the demo uploads with.

    They are marked ``demo``: refused here and at every sign-in when WARDWATCH_ENVIRONMENT=production, so no
    password printed on a demo terminal can ever open a production server.
    """
    passwords = {role: secrets.token_urlsafe(12) for role in ("clinician", "admin")}
    with session_scope(factory) as session:
        for role, password in passwords.items():
            create_user(session=session, username=f"demo-{role}", password=password, role=Role(role), demo=True,
                        production=settings.production)
        _row, token = create_token(session=session, username="demo-admin", expires_days=1, name="demo upload",
                                   scopes=[Scope.write_recordings, Scope.read_events])
    return DemoAccounts(clinician=("demo-clinician", passwords["clinician"]),
                        admin=("demo-admin", passwords["admin"]), upload_token=token)


def _drive(base: str, video: Path, server: uvicorn.Server, serve: bool, t0: float, outcome: dict,
           accounts: DemoAccounts) -> None:
    """Upload the recording (authenticated like a hospital system), wait for scoring, print the result."""
    try:
        while not server.started:
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {accounts.upload_token}"}
        with httpx.Client(base_url=base, timeout=60, headers=headers) as client, video.open("rb") as handle:
            response = client.post("/api/v1/recordings", files={"file": (video.name, handle, "video/mp4")},
                                   data={"room": "demo-room-1", "patient_ref": "demo-patient"})
            response.raise_for_status()
            recording = response.json()
            print(f"uploaded recording {recording['id']} ({recording['duration']:.0f} s); scoring...", flush=True)
            while recording["status"] not in ("scored", "failed"):
                time.sleep(0.5)
                recording = client.get(f"/api/v1/recordings/{recording['id']}").json()
            events = client.get("/api/v1/events", params={"recording": recording["id"], "limit": 500}).json()
        elapsed = time.monotonic() - t0
        outcome.update(recording=recording, events=events["data"], seconds=elapsed)
        if recording["status"] == "failed":
            print(f"scoring failed: {recording['error']}", flush=True)
        else:
            print(f"scored {recording['clip_count']} clips; {events['count']} events flagged "
                  f"({elapsed:.1f} s from start to first event visible)", flush=True)
            for event in sorted(events["data"], key=lambda e: e["start"]):
                print(f"  {event['label']:<18} {event['start']:6.1f}-{event['end']:<6.1f} s  "
                      f"peak {event['peak_score']:.2f}", flush=True)
        if serve:
            print(f"\nReview the events at {base}/   (Ctrl-C to stop)", flush=True)
            print(f"  sign in as {accounts.clinician[0]} / {accounts.clinician[1]}  (clinician: reviews events)",
                  flush=True)
            print(f"  or as      {accounts.admin[0]} / {accounts.admin[1]}  (admin: {base}/models.html)", flush=True)
    except Exception as exc:  # noqa: BLE001 - report and stop the server rather than hang
        outcome["error"] = str(exc)
        print(f"demo failed: {exc}", flush=True)
        server.should_exit = True
        return
    if not serve:
        server.should_exit = True


def run_demo(*, data_dir: Path, host: str, port: int, seconds: float, seed: int, serve: bool) -> int:
    """Generate, serve, upload, score, print the URL. Returns a process exit code."""
    t0 = time.monotonic()
    if not _port_free(host, port):
        print(f"port {port} on {host} is in use: stop what runs there or pass --port")
        return 2
    data_dir = data_dir.resolve()
    settings = Settings(data_dir=data_dir, database_url=None, broker_url=None)
    if settings.production:
        print("the demo's accounts are refused in production: unset WARDWATCH_ENVIRONMENT=production")
        return 2
    _fresh_data_dir(data_dir)
    synth = generate(data_dir / "synthetic", SynthConfig(seconds=seconds, seed=seed))
    print(f"synthetic ward video: {synth.video} ({len(synth.events)} events: "
          f"{', '.join(f'{e.label}@{e.start:.0f}s' for e in synth.events)})", flush=True)
    app = served_app(settings)
    accounts = create_demo_accounts(settings, app.state.session_factory)
    server = uvicorn.Server(uvicorn_config(app, settings, host, port, log_level="warning"))
    outcome: dict = {}
    base = f"http://{host}:{port}"
    driver = threading.Thread(target=_drive, args=(base, synth.video, server, serve, t0, outcome, accounts),
                              daemon=True)
    driver.start()
    server.run()
    driver.join(timeout=5)
    if "error" in outcome or outcome.get("recording", {}).get("status") != "scored":
        return 1
    return 0
