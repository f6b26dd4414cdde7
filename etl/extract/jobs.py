"""Job pages decoded for the typed path: each record's text as received, and its 29 fields.

``decode_jobs_page`` is the client's decoder for the jobs endpoint. It splits the page's
``data`` array into the records' own JSON texts (msgspec ``Raw``: no Python object per value)
and decodes each text once more straight into the fields the transform reads, with their JSON
types checked in C; fields the contract does not map are skipped. A page msgspec refuses as a
whole (not JSON, lone surrogates, NaN, nesting beyond its reach, no ``data`` array) is decoded
by ``decode_json`` as every other body is, and takes the transform's general path. A page whose
records hold MAX_DEPTH brackets or more (nesting that deep is possible) goes there too. A
record msgspec refuses alone (a field of another JSON type, a record that is not an object)
gets None for its fields: the pipeline decodes that text (``decode_value``) and the general
path decides, reason included.
"""

from __future__ import annotations

from typing import Any

import msgspec

from etl.extract.client import decode_json
from etl.transform import FIELDS, MAX_DEPTH, Kind

__all__ = ["JobTexts", "decode_jobs_page"]

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


class JobTexts(list[bytes]):
    """A page's records as received (JSON texts); ``fields[i]`` is record i's 29 API fields in
    ``FIELDS`` order, or None where the general path must decode the text."""

    __slots__ = ("fields",)

    def __init__(self, texts: list[bytes], fields: list[tuple[Any, ...] | None]) -> None:
        super().__init__(texts)
        self.fields = fields


def decode_jobs_page(content: bytes) -> Any:
    """Decode a jobs page: ``{"meta": ..., "data": JobTexts}``, or what ``decode_json`` makes
    of a page msgspec refuses (its errors are the client's to report)."""
    try:
        page = _PAGE.decode(content)
    except (msgspec.MsgspecError, RecursionError):
        return decode_json(content)
    texts = [bytes(raw) for raw in page.data]
    if any(text.count(b"[") + text.count(b"{") >= MAX_DEPTH for text in texts):
        # It may nest deeper than MAX_DEPTH: decoded here, on the pager's shallow stack, as
        # before (deep enough, the general path's walk rejects the record; deeper still, the
        # decoder gives up and the page is a protocol error). The only such check: the typed
        # transform relies on it.
        return decode_json(content)
    fields: list[tuple[Any, ...] | None] = []
    for text in texts:
        try:
            fields.append(_astuple(_JOB.decode(text)))
        except (msgspec.MsgspecError, RecursionError):
            fields.append(None)
    return {"meta": page.meta, "data": JobTexts(texts, fields)}
