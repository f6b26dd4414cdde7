"""The pure transform of a restore point: a decoded record -> a typed row, or a ``Reject``.

A point is kept when it has a valid ``instanceUid`` and a ``creationDate`` that parses; a
field present with the wrong type (a uid that is not one, a size that is not an integer) is a
reject naming the field, like a job's. Absent and null optional fields are null. The record
itself is stored as received (``raw``). No I/O, no state.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from etl.errors import RecordRejected
from etl.transform import Contract, Field, Reject, jsonb_safe, record_key

__all__ = ["POINT_COLUMNS", "PointRow", "transform_point", "transform_points"]

_FIELDS = (
    Field("instance_uid", "instanceUid", "uuid"),
    Field("backup_agent_uid", "backupAgentUid", "uuid"),
    Field("job_uid", "jobUid", "uuid"),
    Field("backed_up_items", "backedupItems", "text"),
    Field("destination", "destination", "text"),
    Field("size", "size", "int64"),
    Field("increment_raw_data_size", "incrementRawDataSize", "int64"),
    Field("source_size", "sourceSize", "int64"),
    Field("creation_date", "creationDate", "timestamp"),
)
_PLAN = Contract("restore_points", _FIELDS).plan
_REQUIRED = {
    "instanceUid": "it is the point's identity",
    "creationDate": "it is the instant the point stands for",
}
POINT_COLUMNS = tuple(f.column for f in _FIELDS)
"""The typed columns of ``vspc.restore_points`` a row holds, in order (``raw`` follows)."""

PointRow = tuple[Any, ...]
"""``POINT_COLUMNS`` values, then the record as JSON text jsonb can store."""


def transform_point(record: object) -> PointRow | Reject:
    """One decoded point -> its row (``POINT_COLUMNS`` values, then the record as JSON text),
    or a ``Reject`` whose reason names the field."""
    if not isinstance(record, dict):
        kind = "an array" if isinstance(record, list) else type(record).__name__
        return Reject(None, f"the record is {kind}, not a JSON object", jsonb_safe(record))
    values: list[object] = []
    try:
        for api, convert, field in _PLAN:
            value = record.get(api)
            if value is None:
                why = _REQUIRED.get(api)
                if why is not None:
                    state = "null" if api in record else "missing"
                    raise RecordRejected(
                        f"field {api}: is {state}, but every restore point must have one ({why})",
                        field=api,
                    )
                values.append(None)
            elif field.kind == "text":
                values.append(jsonb_safe(convert(field, value)))  # NUL: PostgreSQL refuses it
            else:
                values.append(convert(field, value))
    except RecordRejected as exc:
        return Reject(record_key(record), exc.reason, jsonb_safe(record))
    values.append(_raw_text(record))
    return tuple(values)


def _raw_text(record: dict[str, Any]) -> str:
    """The record as JSON text jsonb takes: orjson's, unless it holds what jsonb refuses (NUL,
    lone surrogates, integers beyond 64 bits), which ``jsonb_safe`` replaces."""
    try:
        text = orjson.dumps(record).decode()
    except TypeError:  # orjson.JSONEncodeError
        text = ""
    if not text or "\\u0000" in text:
        text = json.dumps(jsonb_safe(record), ensure_ascii=False, separators=(",", ":"))
    return text


def transform_points(records: list[Any]) -> tuple[list[PointRow], list[Reject]]:
    """A page of points -> its rows and its rejects."""
    rows: list[PointRow] = []
    rejects: list[Reject] = []
    for record in records:
        result = transform_point(record)
        if isinstance(result, Reject):
            rejects.append(result)
        else:
            rows.append(result)
    return rows, rejects
