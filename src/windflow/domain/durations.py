"""Durations written the way operators write them: ``500ms``, ``2s``, ``5m``, ``1h30m`` or plain seconds."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Return seconds for ``value``; raise ``ValueError`` with a readable message."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as '2s'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float (JSON allows 1 followed by 400 zeros)
            raise ValueError("duration out of range (0 to 366 days)") from None
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or pos == 0:
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or units ms, s, m, h, d (e.g. '1m30s')"
                ) from None
    else:
        raise ValueError("a duration must be a number of seconds or a string such as '2s'")
    if seconds != seconds or seconds < 0 or seconds > 366 * 86400:
        raise ValueError(f"duration {value!r} out of range (0 to 366 days)")
    return seconds


def format_duration(seconds: float) -> str:
    """Shortest exact text for ``seconds`` that :func:`parse_duration` reads back to the same value."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and round(seconds * 1000, 6) == int(round(seconds * 1000, 6)):
        text = f"{int(round(seconds * 1000))}ms"
        if parse_duration(text) == seconds:  # 0.009 is not exactly 9 * 0.001: such values stay in seconds
            return text
    text = f"{seconds:g}" if float(f"{seconds:g}") == seconds else repr(seconds)
    if "e" in text:  # 1e-07: parse_duration reads units after plain decimals only
        text = format(Decimal(repr(seconds)), "f")
    return f"{text}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds as a float in Python; a readable string such as ``"2s"`` in JSON and YAML."""
