"""HTTP dates (RFC 9110 section 5.6.7), read the same way by the edge and the CDN purgers."""

from __future__ import annotations

import calendar
import email.utils

__all__ = ["http_date"]


def http_date(text: str) -> float | None:
    """Seconds since the epoch of ``text``, or None when it is not a date.

    Takes the IMF-fixdate and the obsolete RFC 850 and asctime forms; a date without a
    zone (asctime) is UTC, as HTTP says, never the machine's local time. A date out of any
    calendar's range is not a date (no OverflowError)."""
    try:
        parts = email.utils.parsedate_tz(text)
        if parts is None:
            return None
        return float(calendar.timegm(parts[:9]) - (parts[9] or 0))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
