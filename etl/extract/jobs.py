"""Job pages decoded into :class:`~etl.transform.JobRecord` records, whatever the body holds.

``decode_jobs_page`` is the client's decoder for the job collections. It splits the page's
``data`` array into the records' own JSON texts (msgspec ``Raw``: no Python object per value)
and decodes each text once more straight into the fields the transform reads, with their JSON
types checked in C; fields the contract does not map are skipped. A page msgspec refuses as a
whole (not JSON, lone surrogates, NaN, nesting beyond its reach, no ``data`` array) is decoded
by ``decode_value`` as every other body is, and its records take the transform's general path.
A page whose records hold MAX_DEPTH brackets or more (nesting that deep is possible) goes there
too. A record msgspec refuses alone (a field of another JSON type, a record that is not an
object) gets None for its fields: the transform decodes that text and the general path
decides, reason included.
"""

from __future__ import annotations

from typing import Any

import msgspec

from etl.jsontext import decode_value
from etl.transform import FIELDS, MAX_DEPTH, JobRecord, Kind, decoded_record

__all__ = ["decode_jobs_page", "job_records"]

_TYPES: dict[Kind, Any] = {
    "uuid": str,
    "text": str,
    "enum": str,
    "timestamp": str,  # parsed by the transform: its rules are stricter than RFC 3339's
    "enum_list": list[str],
    "int32": int,  # ranges are checked by the transform
    "int64": int,
    "bool": bool,
}
_Job = msgspec.defstruct(
    "_Job", [(field.api, _TYPES[field.kind] | None, None) for field in FIELDS], array_like=False
)


class _Page(msgspec.Struct):
    data: list[msgspec.Raw]
    meta: Any = None


_PAGE = msgspec.json.Decoder(_Page)
_JOB = msgspec.json.Decoder(_Job)
_astuple = msgspec.structs.astuple
_new = tuple.__new__


def decode_jobs_page(content: bytes) -> Any:
    """Decode a jobs page: ``{"meta": ..., "data": [JobRecord, ...]}``, or what
    ``decode_value`` makes of a body without a ``data`` array (its errors, and the envelope's,
    are the client's and the pager's to report)."""
    try:
        page = _PAGE.decode(content)
    except (msgspec.MsgspecError, RecursionError):
        return _decoded_whole(content)
    texts = [bytes(raw) for raw in page.data]
    if any(text.count(b"[") + text.count(b"{") >= MAX_DEPTH for text in texts):
        # It may nest deeper than MAX_DEPTH: decoded here, on the pager's shallow stack, as
        # before (deep enough, the general path's walk rejects the record; deeper still, the
        # decoder gives up and the page is a protocol error). The only such check: the typed
        # transform relies on it.
        return _decoded_whole(content)
    records = []
    for text in texts:
        try:
            fields = _astuple(_JOB.decode(text))
        except (msgspec.MsgspecError, RecursionError):
            fields = None
        records.append(_new(JobRecord, (text, fields, None, False, False)))  # typed_record
    return {"meta": page.meta, "data": records}


def _decoded_whole(content: bytes) -> Any:
    body, proven = decode_value(content)
    if type(body) is dict and type(data := body.get("data")) is list:
        body["data"] = [decoded_record(value, proven) for value in data]
    return body


def job_records(items: list[Any]) -> list[JobRecord]:
    """A page's ``data`` as records: as :func:`decode_jobs_page` made them, or, for a body
    another decoder read (the result of a 202 async action), the decoded values as records
    of the general path (not ``proven``: the transform checks everything)."""
    if not items or type(items[0]) is JobRecord:
        return items
    return [decoded_record(value, False) for value in items]
