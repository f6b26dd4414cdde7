"""Query parameters of a VSPC collection: ``limit``/``offset`` paging and JSON ``filter``,
``sort`` and ``select``, checked the way the console checks them (a bad one is a 400, never
silently ignored), then applied to rows.

Comparisons are case-insensitive for strings (enum values arrive in several casings) and by
instant for timestamps (each job carries its own UTC offset).
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etl.simulator.wire import parse_instant

MAX_OFFSET = 2_147_483_647
_LOGICAL = frozenset({"and", "or", "not", "exclusiveOr"})
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "lessThan": operator.lt,
    "lessThanOrEqual": operator.le,
    "greaterThan": operator.gt,
    "greaterThanOrEqual": operator.ge,
}
_LEAF = frozenset({"equals", "notEquals", "in", "contains", "subset", "superset", *_COMPARE})
_LIST_VALUED = frozenset({"in", "subset", "superset"})


class QueryError(ValueError):
    """The query is invalid: the console answers 400 with an error of type ``logical``."""


@dataclass(frozen=True)
class Query:
    limit: int
    offset: int
    filter: tuple[dict[str, Any], ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (property, descending)
    select: tuple[str, ...] | None = None


def parse_query(
    params: Mapping[str, Sequence[str]],
    *,
    fields: Collection[str],
    max_page_size: int,
    default_limit: int = 100,
) -> Query:
    """Check the query string of a collection request; raise :class:`QueryError` if invalid."""
    limit = min(_integer(params, "limit", default_limit, 1), max_page_size)
    offset = _integer(params, "offset", 0, 0)
    filters = _json_list(params, "filter")
    for node in filters:
        _check_node(node, fields)
    sort = []
    for item in _json_list(params, "sort"):
        prop = _property(item, "property", fields)
        direction = str(item.get("direction", "ascending")).lower()
        if direction not in ("ascending", "descending"):
            raise QueryError(f"Sort direction '{item.get('direction')}' is not supported.")
        sort.append((prop, direction == "descending"))
    select = None
    if "select" in params:
        select = tuple(
            _property(item, "propertyPath", fields) for item in _json_list(params, "select")
        )
    return Query(limit, offset, tuple(filters), tuple(sort), select)


class Index:
    """What a console's indexes give for one state of a collection, built once and kept while
    the rows do not change: each row's instant for a timestamp property, and whether they
    ascend. Without it, every new filter would parse and check every row again (~0.4 s per
    query over 100,000 restore points, on the cores the ETL runs on).
    The instants of the ``previous`` state's values are reused (a value is parsed once)."""

    def __init__(self, rows: Sequence[dict[str, Any]], previous: Index | None = None) -> None:
        self.rows = rows
        self._lock = threading.Lock()
        self._instants: dict[str, list[datetime | None]] = {}
        self._parsed: dict[str, dict[str, datetime | None]] = {}
        self._previous = previous._parsed if previous is not None else {}
        self._ordered: dict[str, list[datetime] | None] = {}
        self._uids: dict[str, list[int]] | None = None

    def positions(self, uids: Collection[str]) -> list[int]:
        """The positions of the rows whose ``instanceUid`` is one of ``uids`` (any case), in
        stored order: a console's key index, built on first use."""
        with self._lock:
            found = self._uids
        if found is None:
            found = {}
            for at, row in enumerate(self.rows):
                uid = row.get("instanceUid")
                if isinstance(uid, str):
                    found.setdefault(uid.casefold(), []).append(at)
            with self._lock:
                self._uids = found
        folded = {uid.casefold() for uid in uids}
        return sorted(at for uid in folded for at in found.get(uid, ()))

    def instants(self, prop: str) -> list[datetime | None]:
        with self._lock:
            found = self._instants.get(prop)
        if found is None:
            known = self._previous.get(prop, {})
            parsed: dict[str, datetime | None] = {}
            found = []
            for row in self.rows:
                value = row.get(prop)
                if isinstance(value, str):
                    instant = known[value] if value in known else parse_instant(value)
                    parsed[value] = instant
                    found.append(instant)
                else:
                    found.append(None)
            with self._lock:
                self._instants[prop] = found
                self._parsed[prop] = parsed
        return found

    def ordered(self, prop: str) -> list[datetime] | None:
        """The rows' instants of ``prop`` if every row has one and they ascend, else None."""
        with self._lock:
            if prop in self._ordered:
                return self._ordered[prop]
        found = self.instants(prop)
        keys: list[datetime] | None = [k for k in found if k is not None]
        if len(keys or ()) < len(found) or any(b < a for a, b in itertools.pairwise(keys or ())):
            keys = None
        with self._lock:
            self._ordered[prop] = keys
        return keys


def arrange(
    rows: Sequence[dict[str, Any]],
    query: Query,
    timestamps: Collection[str],
    index: Index | None = None,
) -> list[dict[str, Any]]:
    """The rows that pass the filter, in the requested order (stored order when unsorted);
    ``index``, if given, is of ``rows`` and only makes the answer faster."""
    window = _window(rows, query, timestamps, index)
    if window is not None:
        return window
    rows = _by_uid(rows, query, index)
    nodes = [_prepared(node, timestamps) for node in query.filter]
    chosen = [row for row in rows if all(_matches(row, node, timestamps) for node in nodes)]
    for prop, descending in reversed(query.sort):
        chosen.sort(
            key=lambda row, p=prop: _sort_key(row.get(p), p, timestamps),  # type: ignore[misc]
            reverse=descending,
        )
    return chosen


_BISECT: dict[str, Callable[[list[datetime], datetime], int]] = {
    "greaterThan": bisect.bisect_right,
    "greaterThanOrEqual": bisect.bisect_left,
    "lessThan": bisect.bisect_left,
    "lessThanOrEqual": bisect.bisect_right,
}


def _by_uid(
    rows: Sequence[dict[str, Any]], query: Query, index: Index | None = None
) -> Sequence[dict[str, Any]]:
    """The rows a filter can match, in stored order: when it holds an ``in`` of strings on
    ``instanceUid`` (at the top, so every match must pass it), only the rows with one of those
    uids, found by ``index`` or one quick scan (the filter is still applied to them); else all
    of them."""
    for node in query.filter:
        values = node.get("value")
        if (
            node.get("operation") == "in"
            and node.get("property") == "instanceUid"
            and isinstance(values, list)
            and all(isinstance(v, str) for v in values)
        ):
            if index is not None:
                return [rows[at] for at in index.positions(values)]
            exact, folded = set(values), {v.casefold() for v in values}
            return [
                row
                for row in rows
                if isinstance(uid := row.get("instanceUid"), str)
                and (uid in exact or uid.casefold() in folded)
            ]
    return rows


def _window(
    rows: Sequence[dict[str, Any]],
    query: Query,
    timestamps: Collection[str],
    index: Index | None = None,
) -> list[dict[str, Any]] | None:
    """The same answer as the general path, found by bisection, when the rows are stored in
    ascending order of one timestamp, the query sorts by it ascending (or not at all) and
    filters only by comparisons with it: restore points asked for "created since", as a
    console's index would answer them. None when the query is not of that shape."""
    props = {node.get("property") for node in query.filter}
    if len(props) != 1 or any(node.get("operation") not in _BISECT for node in query.filter):
        return None
    prop = props.pop()
    if prop not in timestamps or query.sort not in ((), ((prop, False),)):
        return None
    prop = str(prop)
    keys = (index if index is not None else Index(rows)).ordered(prop)
    given = [_instant(node.get("value")) for node in query.filter]
    bounds = [b for b in given if b is not None]
    if keys is None or len(bounds) < len(given):
        return None
    low, high = 0, len(rows)
    for node, bound in zip(query.filter, bounds, strict=True):
        cut = _BISECT[node["operation"]](keys, bound)
        if node["operation"].startswith("greater"):
            low = max(low, cut)
        else:
            high = min(high, cut)
    return list(rows[low:high])


def _instant(value: Any) -> datetime | None:
    return parse_instant(value) if isinstance(value, str) else None


def project(row: dict[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    """Only the selected properties of a row (all of them without ``select``)."""
    if select is None:
        return row
    return {prop: row[prop] for prop in select if prop in row}


def _integer(params: Mapping[str, Sequence[str]], name: str, default: int, minimum: int) -> int:
    values = params.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise QueryError(f"The value '{values[0]}' is not valid for {name}.") from None
    if not minimum <= value <= MAX_OFFSET:
        raise QueryError(f"{name} must be between {minimum} and {MAX_OFFSET}.")
    return value


def _json_list(params: Mapping[str, Sequence[str]], name: str) -> list[dict[str, Any]]:
    values = params.get(name)
    if not values:
        return []
    try:
        parsed = json.loads(values[0])
    except ValueError:
        raise QueryError(f"The {name} parameter is not valid JSON.") from None
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise QueryError(f"The {name} parameter must be a JSON array of objects.")
    return parsed


def _property(item: dict[str, Any], key: str, fields: Collection[str]) -> str:
    prop = item.get(key)
    if not isinstance(prop, str) or prop not in fields:
        raise QueryError(f"Property '{prop}' does not exist or cannot be used here.")
    return prop


def _check_node(node: Any, fields: Collection[str]) -> None:
    if not isinstance(node, dict):
        raise QueryError("A filter item must be a JSON object.")
    op = node.get("operation")
    if op in _LOGICAL:
        items = node.get("items")
        if not isinstance(items, list) or not items:
            raise QueryError(f"Filter operation '{op}' needs a non-empty 'items' array.")
        for item in items:
            _check_node(item, fields)
        return
    if op not in _LEAF:
        raise QueryError(f"Filter operation '{op}' is not supported.")
    _property(node, "property", fields)
    if "value" not in node:
        raise QueryError(f"Filter operation '{op}' needs a 'value'.")
    if op in _LIST_VALUED and not isinstance(node["value"], list):
        raise QueryError(f"Filter operation '{op}' needs an array value.")


def _normal(value: Any, prop: str, timestamps: Collection[str]) -> Any:
    if isinstance(value, str):
        if prop in timestamps:
            instant = parse_instant(value)
            if instant is not None:
                return instant
        return value.casefold()
    if isinstance(value, list):
        return [_normal(item, prop, timestamps) for item in value]
    return value


def _prepared(node: dict[str, Any], timestamps: Collection[str]) -> dict[str, Any]:
    """``node`` with its value normalized once (``_wanted``), not once per row: an ``in``
    of a few dozen uids over 100,000 rows would otherwise cost the simulator seconds."""
    if node["operation"] in _LOGICAL:
        return {**node, "items": [_prepared(item, timestamps) for item in node["items"]]}
    return {**node, "_wanted": _normal(node["value"], node["property"], timestamps)}


def _matches(row: dict[str, Any], node: dict[str, Any], timestamps: Collection[str]) -> bool:
    op = node["operation"]
    if op in _LOGICAL:
        results = [_matches(row, item, timestamps) for item in node["items"]]
        return {
            "and": all(results),
            "or": any(results),
            "not": not all(results),
            "exclusiveOr": sum(results) == 1,
        }[op]
    prop = node["property"]
    actual = _normal(row.get(prop), prop, timestamps)
    wanted = node["_wanted"] if "_wanted" in node else _normal(node["value"], prop, timestamps)
    try:
        if op == "equals":
            return bool(actual == wanted)
        if op == "notEquals":
            return bool(actual != wanted)
        if op == "in":
            return actual in wanted
        if op == "contains":
            return actual is not None and wanted in actual
        if op == "subset":
            return actual is not None and all(item in wanted for item in actual)
        if op == "superset":
            return actual is not None and all(item in actual for item in wanted)
        return actual is not None and wanted is not None and _COMPARE[op](actual, wanted)
    except TypeError:  # e.g. a number compared with a string: no match, as SQL would say
        return False


def _sort_key(value: Any, prop: str, timestamps: Collection[str]) -> tuple[int, str, Any]:
    # Nulls first when ascending; the type name keeps a column of mixed types sortable.
    normal = _normal(value, prop, timestamps)
    if normal is None:
        return (0, "", "")
    if isinstance(normal, list):
        normal = str(normal)
    return (1, type(normal).__name__, normal)
