"""Fixtures for the ingest tests (the video helpers live in :mod:`tests.ingest.videos`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ingest.videos import write_video


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_video(name, **write_video_kwargs) -> Path`` inside the test's tmp_path."""

    def factory(name: str = "v.mp4", **kwargs: object) -> Path:
        return write_video(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return factory
