"""``wardwatch ingest``: cut one file into clips and score it in this process, no server or database.

Why the model is imported lazily (:mod:`server.offline_scoring`): with ``score=False`` nothing of torch
or the model code is loaded, so a decode-and-cut run starts in a fraction of a second and its memory is
the decoder's (a few tens of MB), not torch's (~650 MB resident after ``import torch``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.clips import Clip, ClipSpec, IngestReport, iter_clips
from ingest.errors import StreamError
from ingest.probe import probe
from ingest.stream import ReconnectPolicy, iter_stream_clips, redact_url, validate_stream_url

if TYPE_CHECKING:
    from model.weights import LoadedModel


def ingest_file(path: str | Path, *, score: bool = True, model_path: Path | None = None, device: str = "auto",
                clip_seconds: float | None = None, stride_seconds: float | None = None,
                sample_fps: float | None = None, size: tuple[int, int] | None = None, threshold: float = 0.5,
                progress: bool = False, max_reconnects: int = 3) -> dict[str, Any]:
    """Summary ``{"clips", "frames", "duration", "events", "errors", "gaps"}`` of one file.

    Clip geometry defaults to the model's input spec (so scoring sees what the model was trained on);
    the options override it, and with ``score=False`` no model is loaded at all.
    """
    if is_stream_url(str(path)):
        return _ingest_stream(str(path), score=score, model_path=model_path, device=device, threshold=threshold,
                              max_reconnects=max_reconnects, progress=progress)
    info = probe(path)
    loaded = _load(model_path, device) if score else None
    base = loaded.input_spec if loaded else None
    spec = ClipSpec(
        clip_seconds=clip_seconds or (base.clip_seconds if base else 2.0),
        stride_seconds=stride_seconds or clip_seconds or (base.clip_seconds if base else 2.0),
        sample_fps=sample_fps or (base.sample_fps if base else 8.0),
        size=size or (tuple(base.size) if base else (112, 112)),  # type: ignore[arg-type]
    )
    if loaded is not None and (spec.frames_per_clip != loaded.input_spec.frames
                               or tuple(spec.size) != tuple(loaded.input_spec.size)):
        raise ValueError(
            f"clip geometry {spec.frames_per_clip} frames at {spec.size} does not match the model's input "
            f"({loaded.input_spec.frames} frames at {tuple(loaded.input_spec.size)})"
        )
    report = IngestReport()
    clips: Iterable[Clip] = iter_clips(path, spec, started_at=info.creation_time, report=report, info=info)
    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, total=int(info.duration // spec.stride_seconds) or None, unit="clip",
                     desc=Path(path).name)
    return _summarise(clips, loaded, threshold, report, info.duration)


def is_stream_url(text: str) -> bool:
    return "://" in text and text.split("://", 1)[0].lower() in {"rtsp", "rtmp", "http", "https", "udp", "tcp"}


def _ingest_stream(url: str, *, score: bool, model_path: Path | None, device: str, threshold: float,
                   max_reconnects: int, progress: bool) -> dict[str, Any]:
    """Read a stream until it ends (or stays down after ``max_reconnects`` attempts), then summarise."""
    loaded = _load(model_path, device) if score else None
    base = loaded.input_spec if loaded else None
    spec = ClipSpec(clip_seconds=base.clip_seconds if base else 2.0,
                    stride_seconds=base.clip_seconds if base else 2.0,
                    sample_fps=base.sample_fps if base else 8.0,
                    size=tuple(base.size) if base else (112, 112))  # type: ignore[arg-type]
    report = IngestReport()
    source = iter_stream_clips(validate_stream_url(url), spec, report=report,
                               reconnect=ReconnectPolicy(initial_delay=0.5, max_attempts=max_reconnects))

    def until_down() -> Iterator[Clip]:
        try:
            yield from source
        except StreamError as exc:
            report.errors.append(str(exc))

    clips: Iterable[Clip] = until_down()
    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, unit="clip", desc=redact_url(url))
    return _summarise(clips, loaded, threshold, report, None)


def _load(model_path: Path | None, device: str) -> LoadedModel:
    from server.offline_scoring import load_model  # torch and the model code, only when scoring

    return load_model(model_path, device)


def _summarise(clips: Iterable[Clip], loaded: LoadedModel | None, threshold: float, report: IngestReport,
               duration: float | None) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    if loaded is None:
        for _clip in clips:  # each clip is dropped at once: memory stays one clip's worth
            pass
    else:
        from server.offline_scoring import score_events

        events = score_events(clips, loaded, threshold)
    return {
        "clips": report.clips,
        "frames": report.frames,
        "duration": round(report.duration or duration or 0.0, 3),
        "events": events,
        "errors": list(report.errors),
        "gaps": [list(g) for g in report.gaps],
    }
