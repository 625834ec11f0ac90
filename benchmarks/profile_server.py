"""``wardwatch serve`` under yappi (CPU clock, every thread), for ``benchmarks/load.py --profile``: when the
server gets SIGUSR1 the profile starts (start-up, imports above all, would drown the figures and take minutes
under the profiler); when it stops (SIGTERM), the functions with the most CPU time are written to the file
named first.

Usage: ``python benchmarks/profile_server.py OUT serve --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import yappi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.cli import main  # noqa: E402

TOP = 60


def _write(out: Path) -> None:
    functions = yappi.get_func_stats()
    functions.sort("ttot", "desc")
    total = sum(item.tsub for item in functions)
    lines = [f"CPU seconds in all threads: {total:.1f}", "  ttot    tsub     calls  function (ttot: with callees)"]
    for item in list(functions)[:TOP]:
        where = f"{Path(item.module).parent.name}/{Path(item.module).name}:{item.lineno}"
        lines.append(f"{item.ttot:6.2f}  {item.tsub:6.2f} {item.ncall:9d}  {where} {item.name}")
    functions.sort("tsub", "desc")
    lines.append("\nby own time (tsub)")
    for item in list(functions)[:TOP]:
        where = f"{Path(item.module).parent.name}/{Path(item.module).name}:{item.lineno}"
        lines.append(f"{item.ttot:6.2f}  {item.tsub:6.2f} {item.ncall:9d}  {where} {item.name}")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    yappi.set_clock_type("cpu")
    signal.signal(signal.SIGUSR1, lambda *_: yappi.start(builtins=False, profile_threads=True))

    def _finish(*_: object) -> None:
        yappi.stop()
        _write(out)
        sys.exit(0)

    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it found: this one
    signal.signal(signal.SIGTERM, _finish)
    main(sys.argv[2:])
    _finish()
