"""JSON bodies decoded as the warehouse needs them: fast, yet exact.

orjson on the hot path; the standard library for what orjson refuses or would change (lone
surrogates, NaN, integers beyond 64 bits), so such a value reaches the transform as sent and
is rejected there with a reason (or stored exactly) instead of failing its whole page.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["decode_json", "decode_value"]


def decode_json(content: bytes) -> Any:
    """Decode a JSON body as :func:`decode_value` does. Nesting beyond the standard library's
    reach raises RecursionError."""
    return decode_value(content)[0]


def decode_value(content: bytes) -> tuple[Any, bool]:
    """Any JSON text decoded, and whether orjson decoded it: then none of its values holds
    NaN, ±Infinity, a lone surrogate or an integer beyond 64 bits (orjson refuses the first
    three and the long-integer check keeps the last away from it)."""
    if _LONG_RUN not in content.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(content), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(content), False


# orjson silently turns an integer beyond 64 bits into a float (2**64 -> 1.8446744073709552e19),
# so a body holding a run of 19 digits anywhere (such an integer or not) takes the standard
# library, which keeps every integer exact. Job records have no such runs: the fast path stays.
# Every digit becomes "0", then one substring search: ~1 ms for a 500-record page, where the
# regex rb"\d{19}" (retried at every digit) took 8 ms, four times orjson's own parse.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
