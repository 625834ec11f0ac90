"""Recording start times from file names such as ``cam12_20240501_223015.mp4``.

Why: NVRs and cameras name their files after the recording start, and that name is often the only
trustworthy clock -- the container's ``creation_time`` is frequently the time of *encoding* or unset.
The pattern is a ``strftime``-style format, configurable per site, searched anywhere in the file name.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path

__all__ = ["started_at_from_filename"]

# strptime directives a file-name pattern may use, with the text each one matches.
_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{1,2}",
    "d": r"\d{1,2}",
    "H": r"\d{1,2}",
    "M": r"\d{1,2}",
    "S": r"\d{1,2}",
    "f": r"\d{1,6}",
    "j": r"\d{1,3}",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})",
    "%": "%",
}


def _regex(pattern: str) -> re.Pattern[str]:
    parts, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            directive = pattern[i + 1]
            if directive not in _DIRECTIVES:
                raise ValueError(f"unsupported directive %{directive} in file name pattern {pattern!r}")
            parts.append(_DIRECTIVES[directive])
            i += 2
        else:
            parts.append(re.escape(ch))
            i += 1
    return re.compile("".join(parts))


def started_at_from_filename(path: str | os.PathLike[str], pattern: str, *, tz: tzinfo = UTC) -> datetime | None:
    """The UTC datetime encoded in ``path``'s file name by ``pattern``, or None when it does not match.

    Args:
        path: a file path; only its name is looked at.
        pattern: ``strftime`` directives (``%Y %y %m %d %H %M %S %f %j %z``) and literal text, found
            anywhere in the name, e.g. ``"%Y%m%d_%H%M%S"`` or ``"rec-%Y-%m-%dT%H-%M-%S"``.
        tz: the time zone of names without ``%z`` (cameras usually write local time).

    Raises:
        ValueError: the pattern uses an unsupported directive.
    """
    regex = _regex(pattern)
    name = Path(path).name
    for match in regex.finditer(name):
        try:
            value = datetime.strptime(match.group(0), pattern)
        except ValueError:
            continue
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.astimezone(UTC)
    return None
