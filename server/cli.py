"""``wardwatch`` command line: synth, ingest, train, db, serve, worker, demo, users, tokens, secret-key, secrets,
streams."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.cli_access import add_access_parsers
from server.cli_secrets import add_secrets_parsers
from server.cli_streams import add_streams_parsers
from server.log_levels import quiet_secret_loggers
from server.observability.logs import configure_logging

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger("wardwatch")


def _synth(args: argparse.Namespace) -> int:
    from ingest.synthetic import SynthConfig, generate

    result = generate(args.out, SynthConfig(seconds=args.seconds, seed=args.seed, width=args.width,
                                            height=args.height, fps=args.fps))
    print(f"video:        {result.video}")
    print(f"annotations:  {result.annotations_json}, {result.annotations_csv}")
    print(f"events:       {len(result.events)} ({', '.join(sorted({e.label for e in result.events}))})")
    print(f"distractors:  {len(result.distractors)}")
    return 0


def _secret_key(_args: argparse.Namespace) -> int:
    from server.security.secret_box import new_key

    print(new_key())
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from server.offline import ingest_file

    try:
        summary = ingest_file(
            args.path, score=not args.no_score, model_path=args.model, device=args.device,
            clip_seconds=args.clip_seconds, stride_seconds=args.stride_seconds, sample_fps=args.sample_fps,
            size=tuple(args.size) if args.size else None, threshold=args.threshold,
            progress=sys.stderr.isatty() and not args.json, max_reconnects=args.max_reconnects,
        )
    except Exception as exc:  # noqa: BLE001 - a CLI answers with a message, not a traceback
        if args.json:
            print(json.dumps({"clips": 0, "frames": 0, "duration": 0.0, "events": [], "errors": [str(exc)]}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.path}: {summary['clips']} clips, {summary['frames']} frames, {summary['duration']:.1f} s")
    for start, end in summary["gaps"]:
        print(f"  gap: {start:.1f}-{end:.1f} s")
    for event in summary["events"]:
        print(f"  {event['label']:<20} {event['start']:8.1f}-{event['end']:<8.1f} peak {event['peak_score']:.2f}")
    for error in summary["errors"]:
        print(f"  warning: {error}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from model.pretrained import PretrainedWeightsError
    from model.training.demo_recipe import train_demo_model

    # Options left out keep the recipe's defaults (passing None would override them).
    sizes = {k: v for k, v in (("videos", args.videos), ("seconds", args.seconds), ("epochs", args.epochs))
             if v is not None}
    try:
        metrics = train_demo_model(args.out, arch=args.arch, seed=args.seed, device=args.device, progress=True,
                                   pretrained=args.pretrained, **sizes)
    except PretrainedWeightsError as exc:  # missing/unfit weights: a message saying what to do, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(args.out), "metrics": metrics}, indent=2, default=str))
    return 0


def _db(args: argparse.Namespace) -> int:
    from server.db import migrate
    from server.settings import get_settings

    settings = get_settings()
    url = settings.sqlalchemy_url
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head", secret_box=settings.secret_box)
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "-1", secret_box=settings.secret_box)
    print(f"database at revision {_current(url)}")
    return 0


def _current(url: str) -> str | None:
    from server.db.migrate import current_revision
    from server.db.session import make_engine

    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.main import served_app
    from server.serving import uvicorn_config
    from server.settings import Settings

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    if args.workers > 1:
        return _serve_processes(args, settings)
    uvicorn.Server(uvicorn_config(served_app(settings), settings, args.host, args.port)).run()
    return 0


def _serve_processes(args: argparse.Namespace, settings: Settings) -> int:
    """N uvicorn worker processes on one socket, each building its own app (and engine) from the environment.
    The schema is migrated once here, not raced by N processes; metrics need PROMETHEUS_MULTIPROC_DIR."""
    from uvicorn.supervisors import Multiprocess

    from server.db import migrate
    from server.serving import uvicorn_config

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        print("warning: PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker's figures only",
              file=sys.stderr)
    if settings.auto_migrate:
        settings.ensure_dirs()
        migrate.upgrade(settings.sqlalchemy_url, secret_box=settings.secret_box)
    os.environ["WARDWATCH_AUTO_MIGRATE"] = "false"
    if args.data_dir:
        os.environ["WARDWATCH_DATA_DIR"] = str(args.data_dir)
    config = uvicorn_config("server.main:served_app", settings, args.host, args.port, factory=True,
                            workers=args.workers)
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from server.settings import Settings
    from server.worker.tasks import celery_app

    if not os.environ.get("WARDWATCH_BROKER_URL"):
        print("error: set WARDWATCH_BROKER_URL (e.g. redis://localhost:6379/0) to run a separate worker",
              file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    celery_app.worker_main(worker_argv(args, Settings()))
    return 0


def worker_argv(args: argparse.Namespace, settings: Settings) -> list[str]:
    """Celery's worker arguments. Tasks run in threads (``--concurrency`` of them, all sharing the process's one
    model and batcher; 1: the solo pool). The node name carries the process id, so two workers on one host never
    register as the same node (Celery's default, ``celery@host``, would make them one to its control commands)."""
    concurrency = args.concurrency or settings.worker_concurrency
    pool = ["--pool", "threads", "--concurrency", str(concurrency)] if concurrency > 1 else ["--pool", "solo"]
    name = args.name or f"wardwatch-{os.getpid()}@%h"
    return ["worker", "--queues", args.queues, *pool, "--hostname", name, "--loglevel", args.loglevel]


EXPERIMENTS = ("atcon",)


def _experiment(args: argparse.Namespace) -> int:
    """``wardwatch experiment NAME [options]``: NAME picks the experiment, the rest is its own CLI."""
    rest = list(args.rest)
    if not rest or rest[0] in ("-h", "--help"):
        print(f"usage: wardwatch experiment {{{','.join(EXPERIMENTS)}}} [options]   "
              "(wardwatch experiment atcon --help for its options)")
        return 0 if rest else 2
    name, options = rest[0], rest[1:]
    if name not in EXPERIMENTS:
        print(f"error: unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    from model.training.experiment import run_cli

    return run_cli(options)


def _demo(args: argparse.Namespace) -> int:
    from server.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir), host=args.host, port=args.port, seconds=args.seconds,
                    seed=args.seed, serve=not args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardwatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic patient-room video with annotations")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=15)
    p.set_defaults(func=_synth)

    p = sub.add_parser("ingest", help="cut a video file or stream into clips and score it, without the server")
    p.add_argument("path", help="a video file, or a stream URL (rtsp, rtmp, http(s), udp, tcp)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-score", action="store_true", help="decode and cut only")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--clip-seconds", type=float, default=None)
    p.add_argument("--stride-seconds", type=float, default=None)
    p.add_argument("--sample-fps", type=float, default=None)
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None)
    p.add_argument("--threshold", type=float, default=0.5, help="event threshold on clip probability")
    p.add_argument("--max-reconnects", type=int, default=3, help="streams: give up after this many failed tries")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("train", help="train a clip classifier on synthetic ward video")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arch", default="tiny3d")
    p.add_argument("--videos", type=int, default=None, help="number of synthetic training videos")
    p.add_argument("--seconds", type=float, default=None, help="length of each training video")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrained", default=None, metavar="SPEC",
                   help="start from torchvision:resnet18|resnet50|r3d_18 (torch hub cache, never downloaded) "
                        "or a weights FILE; the head stays new")
    p.set_defaults(func=_train)

    p = sub.add_parser("experiment", help="reproducible experiments: `wardwatch experiment atcon --help`",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the experiment and its options")
    p.set_defaults(func=_experiment)

    p = sub.add_parser("db", help="database schema (Alembic)")
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", default=None)
    p.set_defaults(func=_db)

    p = sub.add_parser("serve", help="run the API and web UI (embedded worker unless a broker is set)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--workers", type=int, default=1, help="API processes (uvicorn workers) on one port")
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="run a Celery worker (needs WARDWATCH_BROKER_URL)")
    p.add_argument("--queues", default="inference,training,streams,webhooks")
    p.add_argument("--concurrency", type=int, default=None,
                   help="tasks run at once in threads sharing one model (default WARDWATCH_WORKER_CONCURRENCY)")
    p.add_argument("--name", default=None, help="Celery node name (default wardwatch-<pid>@<host>)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=_worker)

    p = sub.add_parser("demo", help="synthetic ward video -> scored events -> browser, all embedded")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", default="wardwatch-demo")
    p.add_argument("--once", action="store_true", help="exit after scoring instead of serving")
    p.set_defaults(func=_demo)

    p = sub.add_parser("secret-key", help="print a new key for WARDWATCH_SECRET_KEYS (secrets at rest)")
    p.set_defaults(func=_secret_key)

    add_access_parsers(sub)  # users, tokens, sessions (server/cli_access.py)
    add_secrets_parsers(sub)  # secrets rekey (server/cli_secrets.py)
    add_streams_parsers(sub)  # streams rekey, its older name (server/cli_streams.py)
    return parser


def _log_format() -> str:
    """WARDWATCH_LOG_FORMAT through the settings; text if the settings do not build (the command then says why)."""
    from server.settings import get_settings

    try:
        return get_settings().log_format
    except Exception:  # noqa: BLE001 - e.g. a retired variable: the command reports it in its own words
        return "text"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, _log_format())
    quiet_secret_loggers()  # httpx would log webhook URLs, query tokens included, at INFO
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
