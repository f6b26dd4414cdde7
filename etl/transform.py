"""The pure transform: one decoded backup agent job record -> one typed row, or a reject.

Each platform's collection has its contract (:class:`Contract`: ``WINDOWS``, ``LINUX``,
``MAC``): the Windows record (``WindowsBackupAgentJob``) as the fields below say; the Linux
and Mac records have no ``scheduleEvents`` (the column is null, whatever the record holds)
and the detailed ``targetType`` enum (``BackupRepository``, ``CloudRepository``,
``LocalFolder``, ``SharedFolder``, ``Unknown``). The page's rows end with the contract's
``system_type`` (``transform_page``).

No I/O, no state. ``transform_record`` returns the 29 business columns of ``vspc.backup_agent_jobs``
in contract order (``BUSINESS_COLUMNS``), or raises ``RecordRejected`` naming the API field (or the
dotted path of a nested value) and saying what was wrong and what was expected.

Decisions the contract leaves open, made here:

- Timestamps must be .NET round-trip ISO-8601, ``YYYY-MM-DDTHH:MM:SS[.f{1,7}](Z|±HH:MM)``.
  Fractions are rounded half up to microseconds (``.9999995`` carries into the next second,
  except at ``9999-12-31T23:59:59``, where .NET's ``DateTime.MaxValue`` stays the last instant).
  A timestamp *without* an offset is read as UTC: .NET writes a ``DateTime`` of unspecified kind
  that way, and rejecting it would drop the whole job (and, if a console version dropped offsets
  everywhere, every job) from the warehouse over what is at worst a shift by the server's offset.
- Integer fields accept a float with an integral value that a double holds exactly (``613.0``,
  up to 2**53) as that integer; any other float is rejected.
- UUIDs must be in the canonical hyphenated form (any case), as VSPC writes them; braces,
  ``urn:uuid:`` or bare hex are rejected rather than guessed at. A checked UUID comes out as
  the text received (PostgreSQL's uuid type reads it; case does not matter there).
- Enum matching folds ASCII case only, so a look-alike such as the Kelvin sign is not taken for
  ``k``; unknown values are kept as received.
- Every string of the record, keys included and however deeply nested, must be storable by
  PostgreSQL text/jsonb (no NUL, no lone surrogate), and every number finite, because the raw
  record is stored as jsonb beside the row. Nesting beyond ``MAX_DEPTH`` (512) levels is
  rejected: writing such a record out again would exhaust Python's recursion limit.
- A timestamp whose instant, once in UTC, falls outside the years 1 to 9999 is rejected: .NET
  cannot produce it, and Python clients of the warehouse could not read it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal, NamedTuple, TypeGuard

import orjson

from etl import __version__
from etl.errors import RecordRejected
from etl.jsontext import decode_value

__all__ = [
    "BUSINESS_COLUMNS",
    "CONTRACTS",
    "FIELDS",
    "LINUX",
    "MAC",
    "MAX_DEPTH",
    "WINDOWS",
    "Contract",
    "Field",
    "JobRecord",
    "Reject",
    "is_uuid",
    "jsonb_safe",
    "normalize_enum",
    "parse_timestamp",
    "record_fingerprint",
    "record_key",
    "transform_job",
    "transform_record",
]

Kind = Literal["uuid", "text", "enum", "int32", "int64", "bool", "timestamp", "enum_list"]


@dataclass(frozen=True, slots=True)
class Field:
    """One business column and the API field it comes from."""

    column: str
    api: str
    kind: Kind
    #: lower-case value -> the specification's spelling (enum and enum_list kinds only)
    spellings: Mapping[str, str] | None = None


def _spellings(*values: str) -> Mapping[str, str]:
    return MappingProxyType({value.lower(): value for value in values})


# Enum values as the specification spells them (identical in API 3.5.1 ... 3.7).
_STATUS = _spellings(
    "None", "Success", "Warning", "Failed", "Running", "Starting", "Stopping", "Unknown"
)
_OPERATION_MODE = _spellings("Server", "Workstation", "UnLicensed", "Unknown")
_BACKUP_MODE = _spellings("EntireComputer", "Volume", "File", "Unknown")
_TARGET_TYPE = _spellings("Local", "Cloud", "Unknown")
_UNIX_TARGET_TYPE = _spellings(
    "BackupRepository", "CloudRepository", "LocalFolder", "SharedFolder", "Unknown"
)
_SCHEDULE_TYPE = _spellings(
    "NotScheduled", "Daily", "Monthly", "Periodically", "Continuously", "Unknown"
)
_SCHEDULE_EVENT = _spellings("AtLock", "AtLogoff", "WhenBackupTargetIsConnected", "Unknown")
_ASSIGN_STATUS = _spellings(
    "Unknown", "Applying", "Assigned", "Unassigned", "Custom", "Deleting", "FailedToApply",
    "Outdated", "Warning",
)  # fmt: skip

FIELDS: tuple[Field, ...] = (
    Field("instance_uid", "instanceUid", "uuid"),
    Field("backup_agent_uid", "backupAgentUid", "uuid"),
    Field("organization_uid", "organizationUid", "uuid"),
    Field("name", "name", "text"),
    Field("description", "description", "text"),
    Field("config_uid", "configUid", "uuid"),
    Field("backup_policy_uid", "backupPolicyUid", "uuid"),
    Field("backup_policy_name", "backupPolicyName", "text"),
    Field("backup_policy_assign_status", "backupPolicyAssignStatus", "enum", _ASSIGN_STATUS),
    Field("backup_policy_failure_message", "backupPolicyFailureMessage", "text"),
    Field("status", "status", "enum", _STATUS),
    Field("operation_mode", "operationMode", "enum", _OPERATION_MODE),
    Field("destination", "destination", "text"),
    Field("restore_points", "restorePoints", "int32"),
    Field("last_run", "lastRun", "timestamp"),
    Field("last_end_time", "lastEndTime", "timestamp"),
    Field("last_duration", "lastDuration", "int32"),
    Field("next_run", "nextRun", "timestamp"),
    Field("avg_duration", "avgDuration", "int32"),
    Field("backup_mode", "backupMode", "enum", _BACKUP_MODE),
    Field("target_type", "targetType", "enum", _TARGET_TYPE),
    Field("is_enabled", "isEnabled", "bool"),
    Field("schedule_type", "scheduleType", "enum", _SCHEDULE_TYPE),
    Field("schedule_events", "scheduleEvents", "enum_list", _SCHEDULE_EVENT),
    Field("last_modified_date", "lastModifiedDate", "timestamp"),
    Field("last_modified_by", "lastModifiedBy", "text"),
    Field("failure_message", "failureMessage", "text"),
    Field("backed_up_size", "backedUpSize", "int64"),
    Field("free_space", "freeSpace", "int64"),
)

BUSINESS_COLUMNS: tuple[str, ...] = tuple(field.column for field in FIELDS)

_QUOTE_LIMIT = 80

# ---------------------------------------------------------------------------------- messages


def _quote(text: str) -> str:
    """``repr`` of at most ~80 characters: NUL and surrogates come out escaped, so storable."""
    if len(text) > _QUOTE_LIMIT:
        return repr(text[: _QUOTE_LIMIT - 3] + "...")
    return repr(text)


def _describe(value: object) -> str:
    """What a wrong value is, in JSON words, without quoting more than ~80 characters of it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {_number(value)}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _number(value: float) -> str:
    if isinstance(value, int) and value.bit_length() > 80:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)


def _reject(path: str, problem: str) -> RecordRejected:
    return RecordRejected(f"field {_safe_text(path[:100])}: {problem}", field=_safe_text(path))


# -------------------------------------------------------------------- storable strings (jsonb)

_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
_NON_FINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_CANNOT_STORE = "PostgreSQL cannot store it"


def _text_problem(text: str) -> str | None:
    """Why PostgreSQL text/jsonb cannot hold ``text``, or None if it can."""
    if text.isascii():
        return "contains a NUL character" if "\x00" in text else None
    bad = _UNSTORABLE_CHAR.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "contains a NUL character"
    return f"contains a lone surrogate (U+{ord(bad.group()):04X}), which is not valid Unicode"


def _safe_text(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE_CHAR.sub(lambda m: "\\u0000" if m.group() == "\x00" else "\ufffd", text)


def _check_storable(record: dict[str, object]) -> None:
    """Reject the record if jsonb could not store it, or if it nests beyond ``MAX_DEPTH``."""
    stack: list[tuple[str, Iterable[tuple[object, object]], int]] = [("", record.items(), 1)]
    while stack:
        prefix, items, depth = stack.pop()
        for key, value in items:
            # The ASCII test and the NUL search run in C; _text_problem only on a suspect.
            if type(key) is str:
                if not key.isascii() or "\x00" in key:
                    problem = _text_problem(key)
                    if problem is not None:
                        raise _reject(_path(prefix, key), f"the key {problem}; {_CANNOT_STORE}")
            elif type(key) is not int:
                raise _reject(_path(prefix, repr(key)), "the key is not a string, as JSON keys are")
            if type(value) is str:
                if not value.isascii() or "\x00" in value:
                    problem = _text_problem(value)
                    if problem is not None:
                        raise _reject(_path(prefix, key), f"the string {problem}; {_CANNOT_STORE}")
            elif value is None or type(value) is int or type(value) is bool:
                continue
            elif type(value) is float:
                if not math.isfinite(value):
                    name = _NON_FINITE_NAMES[repr(value)]
                    raise _reject(
                        _path(prefix, key), f"{name} is not a JSON number; {_CANNOT_STORE}"
                    )
            elif isinstance(value, dict | list) and type(value) in (dict, list):
                if depth >= MAX_DEPTH:
                    raise _reject(_path(prefix, key), _TOO_DEEP)
                pairs = value.items() if isinstance(value, dict) else enumerate(value)
                stack.append((_path(prefix, key), pairs, depth + 1))
            else:
                raise _reject(_path(prefix, key), f"{_describe(value)} is not a JSON value")


# Writing raw back out (json.dumps) recurses once per level: well inside Python's recursion
# limit (1000) on any thread, and far beyond any real job record, which is flat.
MAX_DEPTH = 512
CUT = f"(nested deeper than {MAX_DEPTH} levels: cut)"
_TOO_DEEP = (
    f"nested more than {MAX_DEPTH} levels deep (a job record is flat); the record is kept in "
    f"etl_rejects with what lies deeper cut"
)


def _path(prefix: str, key: object) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def jsonb_safe(value: object, *, max_depth: int | None = None) -> object:
    """A deep copy of a decoded JSON value that PostgreSQL jsonb can store.

    In every string, keys included, NUL becomes the six characters ``\\u0000`` and a lone
    surrogate becomes U+FFFD; NaN and ±Infinity become the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``. Used to keep a rejected record in ``etl_rejects.raw``. Iterative, so any
    depth ``json.loads`` produced is fine; with ``max_depth``, an object or array nested deeper
    becomes the string ``CUT`` (so the copy can be written out by a recursive encoder). Two
    keys that become equal after the replacement collapse into one (the later wins): a loss
    only on records that are rejected anyway.
    """
    if not isinstance(value, dict | list):
        return _safe_scalar(value)
    root = _empty_like(value)
    stack = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        pairs: Iterable[tuple[object, object]]
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            if isinstance(item, dict | list):
                if max_depth is not None and depth >= max_depth:
                    copied: object = CUT
                else:
                    child = _empty_like(item)
                    stack.append((item, child, depth + 1))
                    copied = child
            else:
                copied = _safe_scalar(item)
            if isinstance(target, dict):
                target[_safe_scalar(key)] = copied
            else:
                target.append(copied)
    return root


_Container = dict[object, object] | list[object]


def _empty_like(value: _Container) -> _Container:
    return {} if isinstance(value, dict) else []


def _safe_scalar(value: object) -> object:
    if isinstance(value, str):
        return _safe_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE_NAMES[repr(value)]
    return value


def record_key(record: object) -> str | None:
    """The record's ``instanceUid`` as received, for ``etl_rejects``; None if not a string.

    NUL and lone surrogates are replaced as in ``jsonb_safe`` so the key can be stored as text.
    """
    if isinstance(record, dict):
        key = record.get("instanceUid")
        if isinstance(key, str):
            return _safe_text(key)
    return None


# -------------------------------------------------------------------------------- timestamps

# The regex checks the shape; fromisoformat (in C) reads the numbers and checks their ranges.
# Offset minutes are bounded in the regex because fromisoformat reads +14:60 as +15:00.
_TIMESTAMP = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?", re.ASCII
)
_TIMESTAMP_SHAPE = "YYYY-MM-DDTHH:MM:SS[.fffffff] with Z or ±HH:MM"
_ONE_MICROSECOND = timedelta(microseconds=1)
_fromisoformat = datetime.fromisoformat


def parse_timestamp(value: str) -> datetime:
    """Parse a .NET round-trip ISO-8601 timestamp into an aware datetime, keeping its offset.

    A 7th fractional digit is rounded half up into the microseconds, carrying into the next
    second when needed (``fromisoformat`` alone would truncate it), except past datetime's last
    microsecond: .NET's ``DateTime.MaxValue`` (``9999-12-31T23:59:59.9999999``), a "never"
    sentinel, stays the greatest instant instead of failing. No offset means UTC (see the
    module docstring). Raises ``ValueError`` with a sentence that quotes the value: wrong shape,
    impossible date or time, or out of range.
    """
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise ValueError(f"{_quote(value)} is not an ISO-8601 timestamp ({_TIMESTAMP_SHAPE})")
    fraction, offset = match.groups()
    try:
        if fraction is None or len(fraction) <= 7:  # the dot and up to 6 digits
            stamp = _fromisoformat(value)
        else:  # the 7th digit is at index 26: drop it, then round on it
            stamp = _fromisoformat(value[:26] + value[27:])
            if value[26] >= "5" and stamp.replace(tzinfo=None) != datetime.max:
                stamp += _ONE_MICROSECOND
    except ValueError as exc:
        raise ValueError(f"{_quote(value)} is not a real date and time ({exc})") from exc
    if offset is None:
        return stamp.replace(tzinfo=UTC)
    if stamp.year in (1, 9999):  # only there can the offset push the instant out of range
        try:
            stamp.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                f"{_quote(value)} is not an instant .NET can hold: in UTC it falls outside "
                "the years 1 to 9999"
            ) from None
    return stamp


# ------------------------------------------------------------------------------- converters


def normalize_enum(value: str, spellings: Mapping[str, str]) -> str:
    """The specification's spelling of ``value`` (ASCII case ignored), else ``value`` unchanged."""
    if value.isascii():
        return spellings.get(value.lower(), value)
    return value


# Spelled-out ranges: about twice as fast as the same pattern with re.IGNORECASE.
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_INT32 = (-(2**31), 2**31 - 1, "32-bit")  # PostgreSQL integer
_INT64 = (-(2**63), 2**63 - 1, "64-bit")  # PostgreSQL bigint
_EXACT_FLOAT = 2**53


def is_uuid(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a UUID in the form this contract accepts (canonical, hyphenated,
    any case): what ``_to_uuid`` lets through."""
    return type(value) is str and _UUID.fullmatch(value) is not None


def _to_uuid(field: Field, value: object) -> str:
    """The UUID as received, once its form is checked: PostgreSQL reads the text itself.

    A ``uuid.UUID`` per value (five per record) cost ~1 us each to build and again to write
    out; the staging COPY turns the checked text into the 16 bytes directly.
    """
    if type(value) is str and _UUID.fullmatch(value):
        return value
    raise _reject(
        field.api,
        f"{_describe(value)} is not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
    )


def _to_text(field: Field, value: object) -> str:
    if type(value) is str:
        return value
    raise _reject(field.api, f"expected a string, got {_describe(value)}")


def _to_enum(field: Field, value: object) -> str:
    if type(value) is str:
        return normalize_enum(value, field.spellings or {})
    raise _reject(field.api, f"expected a string, got {_describe(value)}")


def _to_enum_list(field: Field, values: object) -> list[str]:
    if type(values) is not list:
        raise _reject(field.api, f"expected an array of strings, got {_describe(values)}")
    if not values:  # most jobs have no schedule events
        return []
    spellings = field.spellings or {}
    result = []
    for index, value in enumerate(values):
        if type(value) is not str:
            raise _reject(f"{field.api}[{index}]", f"expected a string, got {_describe(value)}")
        result.append(normalize_enum(value, spellings))
    return result


def _to_int(field: Field, value: object, bounds: tuple[int, int, str]) -> int:
    low, high, width = bounds
    if type(value) is int:
        if low <= value <= high:
            return value
        raise _reject(field.api, f"{_number(value)} is outside the {width} integer range")
    if type(value) is float and value.is_integer():
        if not low <= value <= high:
            raise _reject(field.api, f"{_number(value)} is outside the {width} integer range")
        if abs(value) > _EXACT_FLOAT:
            raise _reject(field.api, f"{_number(value)} is a float too large to be exact")
        return int(value)
    raise _reject(field.api, f"expected a {width} integer, got {_describe(value)}")


def _to_int32(field: Field, value: object) -> int:
    return _to_int(field, value, _INT32)


def _to_int64(field: Field, value: object) -> int:
    return _to_int(field, value, _INT64)


def _to_bool(field: Field, value: object) -> bool:
    if type(value) is bool:
        return value
    raise _reject(field.api, f"expected true or false, got {_describe(value)}")


def _to_timestamp(field: Field, value: object) -> datetime:
    if type(value) is not str:
        raise _reject(field.api, f"expected an ISO-8601 timestamp string, got {_describe(value)}")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _reject(field.api, str(exc)) from None


_CONVERTERS: dict[Kind, Callable[[Field, object], object]] = {
    "uuid": _to_uuid,
    "text": _to_text,
    "enum": _to_enum,
    "enum_list": _to_enum_list,
    "int32": _to_int32,
    "int64": _to_int64,
    "bool": _to_bool,
    "timestamp": _to_timestamp,
}


def _absent(field: Field, value: object) -> None:
    """A field the platform's records do not have: null, whatever the record holds."""
    return None


_Plan = tuple[tuple[str, Callable[[Field, object], object], Field], ...]
_TypedPlan = tuple[tuple[int, Callable[[Field, object], object], Field], ...]


@dataclass(frozen=True)
class Contract:
    """One platform's job record: its ``systemType`` spelling (the ``system_type`` column),
    its fields (``FIELDS``' columns and order; another enum where the platform has one) and
    those its records do not have (always null).

    ``plan``: (API field, converter, field) of every field, in column order. ``typed``:
    (position, converter, field) of those the typed path converts: a record decoded straight
    into its fields (``etl.extract.jobs``) has had their JSON types checked by the decoder,
    and for text and booleans that check is all the converter does.
    """

    system_type: str
    fields: tuple[Field, ...]
    absent: frozenset[str] = frozenset()
    plan: _Plan = dataclass_field(init=False, repr=False, compare=False)
    typed: _TypedPlan = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        convert = [_absent if f.api in self.absent else _CONVERTERS[f.kind] for f in self.fields]
        plan = tuple((f.api, c, f) for f, c in zip(self.fields, convert, strict=True))
        typed = tuple(
            (i, c, f)
            for i, (f, c) in enumerate(zip(self.fields, convert, strict=True))
            if f.kind not in ("text", "bool") or f.api in self.absent
        )
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "typed", typed)


def _unix(system_type: str) -> Contract:
    fields = tuple(
        Field(f.column, f.api, f.kind, _UNIX_TARGET_TYPE) if f.api == "targetType" else f
        for f in FIELDS
    )
    return Contract(system_type, fields, frozenset({"scheduleEvents"}))


WINDOWS = Contract("Windows", FIELDS)
LINUX = _unix("Linux")
MAC = _unix("Mac")
CONTRACTS: Mapping[str, Contract] = MappingProxyType(
    {c.system_type: c for c in (WINDOWS, LINUX, MAC)}
)
"""Every platform's contract by its ``system_type``."""

_PLAN = WINDOWS.plan


def _required(record: dict[str, object], api: str, expected: str) -> RecordRejected:
    state = "null" if api in record else "missing"
    return _reject(api, f"is {state}, but every job must have one ({expected})")


def transform_record(record: object) -> tuple[object, ...]:
    """One decoded job record -> its 29 business column values in ``BUSINESS_COLUMNS`` order.

    Absent and null fields both give None. Raises ``RecordRejected`` (with ``field`` set to the
    API field or nested path, or None when the record itself is not an object) for anything the
    warehouse cannot take.
    """
    return transform_with_raw(record)[0]


_FLAT_TYPES = frozenset({str, int, bool, type(None)})


def _flat(record: dict[str, object]) -> bool:
    """Whether every value is a string, integer, boolean, null or list of strings."""
    for value in record.values():
        kind = type(value)
        if kind in _FLAT_TYPES:
            continue
        if kind is list and all(type(item) is str for item in value):  # type: ignore[attr-defined]
            continue
        return False
    return True


def _fast_raw(
    record: dict[str, object], dumped: bytes | None = None, by_orjson: bool = False
) -> str | None:
    """The record as JSON text when it is plainly storable, else None (take the slow walk).

    A typical job is flat: scalars and one list of strings. For such a record orjson proves
    most of what the walk would (valid Unicode, string keys) while producing the text we store
    anyway; only NUL remains to look for, in the output. ``dumped`` is ``orjson.dumps(record)``
    when the caller has it already (see :func:`fingerprint`). ``by_orjson`` says orjson
    decoded the record: it holds no NaN, ±Infinity or lone surrogate, and since ``dumped``
    exists it nests less than orjson's limit (255 levels) — the walk over its values can prove
    nothing more.
    """
    if not (by_orjson and dumped is not None) and not _flat(record):
        return None  # floats (NaN?), objects, nested lists: the walk decides
    if dumped is None:
        try:
            dumped = orjson.dumps(record)
        except TypeError:  # lone surrogates, non-string keys, integers beyond 64 bits
            return None
    return None if b"\\u0000" in dumped else dumped.decode()


def transform_with_raw(
    record: object,
    dumped: bytes | None = None,
    *,
    by_orjson: bool = False,
    contract: Contract = WINDOWS,
) -> tuple[tuple[object, ...], str]:
    """Like :func:`transform_record`, plus the record as JSON text for the ``raw`` column.

    ``dumped``, if given, must be ``orjson.dumps(record)`` (a :class:`Fingerprint`'s ``text``):
    it saves writing the record out a second time. ``by_orjson``: orjson decoded the record
    (``etl.jsontext.decode_value``), so what it holds is storable once ``dumped`` is.
    """
    if type(record) is not dict:
        raise RecordRejected(f"the record is not a JSON object (got {_describe(record)})")
    raw = _fast_raw(record, dumped, by_orjson)
    if raw is None:
        _check_storable(record)
        raw = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    get = record.get
    if get("instanceUid") is None:
        raise _required(record, "instanceUid", "the job's UUID")
    status = get("status")
    if status is None:
        raise _required(record, "status", "the status of the latest job session")
    if status == "":
        raise _reject("status", "is an empty string, but every job must have a status")
    plan = contract.plan
    row = tuple([None if (v := get(api)) is None else conv(f, v) for api, conv, f in plan])
    return row, raw


UID_AT = next(i for i, field in enumerate(FIELDS) if field.api == "instanceUid")
_STATUS_AT = next(i for i, field in enumerate(FIELDS) if field.api == "status")
# In JSON text, what jsonb cannot store is written as an escape: NUL, or half a surrogate pair.
# (An escaped backslash before "u0000" matches too: that record merely takes the general path.)
_UNSAFE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class NotTyped(Exception):
    """The typed path cannot vouch for this record: :func:`transform_with_raw` decides."""


def transform_typed(
    values: tuple[object, ...], text: bytes, contract: Contract = WINDOWS
) -> tuple[tuple[object, ...], str]:
    """Like :func:`transform_with_raw`, for a record already decoded into its 29 API fields.

    ``values`` are those fields in ``FIELDS`` order, each None (absent or null) or of the JSON
    type its kind takes (string; integer; boolean; array of strings); ``text`` is the record
    as received, with fewer than ``MAX_DEPTH`` brackets (``decode_jobs_page`` sends a page
    holding a record that might nest that deep to the general path whole). The row is what
    :func:`transform_with_raw` makes of the same record; the raw is ``text`` itself, which
    jsonb stores as it would the re-encoded record, except that a number in a field the
    contract does not map is kept as the console wrote it, where the general path reads it as
    a double: every digit of a fraction is kept, and a number beyond a double's range
    (``1e400``) is stored instead of rejected as infinity.

    Raises :class:`NotTyped` for whatever this path does not prove storable or valid: a
    ``\\u0000`` or ``\\uD800``-``\\uDFFF`` escape (NUL, half a surrogate pair), text that is
    not UTF-8, a required field missing, or a value a converter rejects. The caller then
    decodes the record and takes :func:`transform_with_raw`, whose verdict, reason included,
    is the one that counts.
    """
    if (
        values[UID_AT] is None
        or not values[_STATUS_AT]
        or (b"\\u" in text and _UNSAFE_ESCAPE.search(text) is not None)
    ):
        raise NotTyped
    row = list(values)
    try:
        raw = text.decode()
        for i, convert, field in contract.typed:
            value = row[i]
            if value is not None:
                row[i] = convert(field, value)
    except (UnicodeDecodeError, RecordRejected):
        raise NotTyped from None
    return tuple(row), raw


# Bump when the transform changes what it makes of a record within one release; a new release
# changes the key anyway (see :func:`fingerprint`).
TRANSFORM_REVISION = 1
_FINGERPRINT_KEY = f"vspc-etl {__version__} transform {TRANSFORM_REVISION}".encode()[:64]
_CANONICAL_UID = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")


class Fingerprint(NamedTuple):
    """A record's ``instanceUid``, its keyed hash, and the JSON text that was hashed."""

    uid: str
    digest: bytes
    text: bytes


def fingerprint(record: object) -> Fingerprint | None:
    """``(instanceUid, hash, text)`` of a record whose row can be recognised as unchanged.

    The hash is a keyed BLAKE2b-128 of the record's compact JSON ``text``; the key holds the
    ETL version, so a fingerprint stored by another release never matches. Only records with a
    lowercase canonical ``instanceUid`` (how the console sends them, and how PostgreSQL prints
    a uuid) that orjson can write qualify; any other record gives None and simply takes the
    full path.
    """
    if type(record) is not dict:
        return None
    uid = record.get("instanceUid")
    if not _canonical(uid):
        return None
    try:
        text = orjson.dumps(record)
    except TypeError:  # lone surrogates, non-string keys, integers beyond 64 bits
        return None
    return _hashed(uid, text)


def fingerprint_text(uid: object, text: bytes) -> Fingerprint | None:
    """The fingerprint of a record given as JSON ``text`` (as received, or as orjson wrote the
    decoded record) and its ``instanceUid``; None unless that uid is canonical lowercase.

    Equal texts are the same record, however written: a match proves the record unchanged.
    The same record written two ways (the console's bytes, orjson's) merely does not match,
    and takes the full path, where the comparison finds it unchanged.
    """
    if not _canonical(uid):
        return None
    return _hashed(uid, text)


def _hashed(uid: str, text: bytes) -> Fingerprint:
    digest = hashlib.blake2b(text, digest_size=16, key=_FINGERPRINT_KEY).digest()
    return Fingerprint(uid, digest, text)


def _canonical(uid: object) -> TypeGuard[str]:
    return type(uid) is str and len(uid) == 36 and _CANONICAL_UID.fullmatch(uid) is not None


# ------------------------------------------------------------------------------- the record


class JobRecord(NamedTuple):
    """One job record as extract hands it over, whichever decoder read its page.

    A record of a page the typed decoder read has ``text`` as received and ``fields``, its 29
    API fields in ``FIELDS`` order (None where that decoder could not read the record alone);
    ``value`` is then None and ``decoded`` False. A record of a page decoded whole has
    ``value``, the decoded record, and ``decoded`` True; ``proven``: the decoder proved
    ``value`` free of NaN, ±Infinity, lone surrogates and integers beyond 64 bits. Its
    fingerprint is :func:`record_fingerprint`'s, computed by the loader's thread (on the
    reader's, the work held the GIL while the loader waited for it after each statement).
    """

    text: bytes | None
    fields: tuple[object, ...] | None
    value: object = None
    decoded: bool = False
    proven: bool = False


def typed_record(text: bytes, fields: tuple[object, ...] | None) -> JobRecord:
    """The record of a typed page: its text as received and the fields read from it."""
    return JobRecord(text, fields)


def decoded_record(value: object, proven: bool) -> JobRecord:
    """The record of a page decoded whole (``proven``: see :class:`JobRecord`)."""
    return JobRecord(None, None, value, True, proven)


def record_fingerprint(record: JobRecord) -> Fingerprint | None:
    """The record's fingerprint: of its text as received (typed), or of the decoded value as
    orjson writes it; None when it cannot be recognised as unchanged (see :func:`fingerprint`)."""
    if record.decoded:
        return fingerprint(record.value)
    fields = record.fields
    if fields is None:
        return None
    assert record.text is not None
    return fingerprint_text(fields[UID_AT], record.text)


@dataclass(frozen=True, slots=True)
class Reject:
    """A record the transform refused, with the reason naming the field; ``instance_uid`` is
    its key as received (None unless a string), ``raw`` the record as jsonb can store it."""

    instance_uid: str | None
    reason: str
    raw: object


def fingerprints(records: list[JobRecord]) -> list[Fingerprint | None]:
    """:func:`record_fingerprint` of each record of a page (the typed ones inline: this runs
    once per record of every sync)."""
    return [
        fingerprint(r.value)
        if r.decoded
        else None
        if r.fields is None
        else fingerprint_text(r.fields[UID_AT], r.text)  # type: ignore[arg-type]
        for r in records
    ]


Rows = tuple[list[tuple[object, ...]], list[str], list[bytes | None], list[Reject]]


def transform_page(
    records: list[JobRecord],
    prints: list[Fingerprint | None],
    skip: set[int],
    contract: Contract = WINDOWS,
) -> Rows:
    """:func:`transform_job` of each record of a page but those at the positions in ``skip``:
    the rows (each ending with the contract's ``system_type``), their raw texts and
    fingerprints (``prints[i]``'s digest), and the rejects."""
    rows: list[tuple[object, ...]] = []
    raws: list[str] = []
    fps: list[bytes | None] = []
    rejects: list[Reject] = []
    typed = transform_typed
    tail = (contract.system_type,)
    for i, record in enumerate(records):
        if i in skip:
            continue
        print_ = prints[i]
        fields = record.fields
        outcome: tuple[tuple[object, ...], str] | Reject
        if fields is not None:  # the typed path, inline: once per record of every sync
            try:
                outcome = typed(fields, record.text, contract)  # type: ignore[arg-type]
            except NotTyped:
                outcome = _general(record, print_, contract)
        else:
            outcome = _general(record, print_, contract)
        if type(outcome) is Reject:
            rejects.append(outcome)
        else:
            row, raw = outcome  # type: ignore[misc]
            rows.append(row + tail)
            raws.append(raw)
            fps.append(None if print_ is None else print_.digest)
    return rows, raws, fps, rejects


def transform_job(
    record: JobRecord, print_: Fingerprint | None = None, contract: Contract = WINDOWS
) -> tuple[tuple[object, ...], str] | Reject:
    """A job record -> its 29 business column values and the raw JSON text, or a Reject.

    A typed record takes :func:`transform_typed`; what that path cannot vouch for is decoded
    and takes :func:`transform_with_raw`, whose verdict, reason included, is the one that
    counts. ``print_``, the record's :func:`record_fingerprint` if computed already: the text
    it hashed is reused as the raw when it is orjson's. ``contract``: the platform's.
    """
    if record.fields is not None:
        try:
            return transform_typed(record.fields, record.text, contract)  # type: ignore[arg-type]
        except NotTyped:
            pass
    return _general(record, print_, contract)


def _general(
    record: JobRecord, print_: Fingerprint | None, contract: Contract
) -> tuple[tuple[object, ...], str] | Reject:
    """The general path of :func:`transform_job`."""
    if record.decoded:
        dumped = None if print_ is None else print_.text
        value, proven = record.value, record.proven
    else:
        assert record.text is not None
        value, proven = decode_value(record.text)
        dumped = None  # the text as received, not as orjson writes the decoded record
    try:
        return transform_with_raw(value, dumped, by_orjson=proven, contract=contract)
    except RecordRejected as exc:
        key = record_key(value)
        safe_key = jsonb_safe(key) if key is not None else None
        return Reject(
            safe_key if isinstance(safe_key, str) else None,
            exc.reason,
            jsonb_safe(value, max_depth=MAX_DEPTH),
        )
