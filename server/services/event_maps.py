"""The stored per-frame explanation maps of an event (``server.frame_maps``), as the API answers them."""

from __future__ import annotations

import base64
import logging
import zipfile
from pathlib import Path

from sqlalchemy.orm import Session

from server.frame_maps import MAP_METHODS, read_maps
from server.schemas import EventMapsPublic, MapMethodsPublic
from server.services.errors import NotFoundError
from server.services.events import get_event

log = logging.getLogger(__name__)


class MapsNotStoredError(NotFoundError):
    """The event exists but has no maps: clinician-added, or scored before maps were stored."""

    def __init__(self, event_id: int) -> None:
        LookupError.__init__(self, f"event {event_id} has no stored explanation maps (events a clinician added, "
                                   "and events scored before per-frame maps existed, have none)")


def get_event_maps(*, session: Session, data_dir: Path, event_id: int) -> EventMapsPublic:
    """The event's maps, base64 per method; NotFoundError for an unknown event or one without maps."""
    event = get_event(session=session, event_id=event_id)
    path = (data_dir / event.maps_path).resolve() if event.maps_path else None
    if path is None or not path.is_file() or data_dir.resolve() not in path.parents:
        raise MapsNotStoredError(event_id)
    try:
        maps = read_maps(path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # a damaged file is as good as none
        log.warning("event %s: unreadable maps file %s: %s", event_id, path, exc)
        raise MapsNotStoredError(event_id) from exc
    width, height = maps.size
    encoded = {method: base64.b64encode(maps.maps[method].tobytes(order="C")).decode("ascii")
               for method in MAP_METHODS}
    agreements = [e.agreement for e in event.explanations if e.agreement is not None]
    return EventMapsPublic(event_id=event.id, width=width, height=height,
                           times=[round(float(t), 6) for t in maps.times], methods=MapMethodsPublic(**encoded),
                           agreement=agreements[0] if agreements else None)
