"""HL7 DTM/TS values: YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

_ZONES: dict[str, tzinfo] = {}
_CHECKED: set[str] = set()


def _zone(sign: str, zone: str) -> tzinfo:
    key = sign + zone
    found = _ZONES.get(key)
    if found is None:
        minutes = int(zone[:2]) * 60 + int(zone[2:])
        if minutes > 14 * 60:
            raise ValueError(f"time zone offset {sign}{zone} is out of range")
        found = _ZONES[key] = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
    return found


def parse_dtm(value: str, default_tz: tzinfo = UTC) -> datetime:
    """An aware datetime; values without an offset are in default_tz (the facility's)."""
    # The shapes nearly every feed sends: YYYYMMDDHHMMSS, optionally +/-ZZZZ, which
    # fromisoformat reads as ISO 8601 basic format once a 'T' separates date and time.
    n = len(value)
    if (n == 14 or (n == 19 and value[14] in "+-" and value[15:].isdigit())) and value[:14].isdigit():
        try:
            if n == 19:
                if value[14:] not in _CHECKED:  # range check (+/-14:00), once per offset
                    _zone(value[14], value[15:])
                    _CHECKED.add(value[14:])
                return datetime.fromisoformat(value[:8] + "T" + value[8:])
            return datetime.fromisoformat(value[:8] + "T" + value[8:]).replace(tzinfo=default_tz)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid date/time: {exc}") from exc
    text = value.strip()
    offset: tzinfo | None = None
    for sign in ("+", "-"):
        pos = text.find(sign, 4)
        if pos > 0:
            zone = text[pos + 1 :]
            text = text[:pos]
            if len(zone) != 4 or not zone.isdigit():
                raise ValueError(f"time zone offset {sign}{zone!r} is not +/-HHMM")
            minutes = int(zone[:2]) * 60 + int(zone[2:])
            if minutes > 14 * 60:
                raise ValueError(f"time zone offset {sign}{zone} is out of range")
            offset = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
            break
    frac = 0
    if "." in text:
        text, frac_text = text.split(".", 1)
        if not frac_text.isdigit() or len(text) != 14:
            raise ValueError(f"{value!r}: fractional seconds need a full YYYYMMDDHHMMSS")
        frac = int((frac_text + "000000")[:6])
    if not text.isdigit() or len(text) not in (4, 6, 8, 10, 12, 14):
        raise ValueError(f"{value!r} is not an HL7 date/time (YYYYMMDD[HHMM[SS]][+ZZZZ])")
    year = int(text[0:4])
    month = int(text[4:6] or 1)
    day = int(text[6:8] or 1)
    hour = int(text[8:10] or 0)
    minute = int(text[10:12] or 0)
    second = int(text[12:14] or 0)
    try:
        return datetime(year, month, day, hour, minute, second, frac, tzinfo=offset or default_tz)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date/time: {exc}") from exc


def format_dtm(dt: datetime) -> str:
    """YYYYMMDDHHMMSS+ZZZZ."""
    offset = dt.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return dt.strftime("%Y%m%d%H%M%S") + f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
