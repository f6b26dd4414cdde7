"""Fault injection: which request goes wrong, and how.

A plan holds rules (``add``) and an optional random mode (``random``). Every request to an API
endpoint asks the plan once (:meth:`FaultPlan.take`); the first armed rule that applies wins,
otherwise the random mode may draw a fault. A rule only ever sees requests it can apply to: a
paging fault never counts a token request, for instance.

Kinds and their parameters (defaults in ``KINDS``):

    "401"         revoke every issued access token, answer 401 (security)
    "429"         throttled; ``retry_after`` seconds in the body, ``header`` adds Retry-After
    "520"         server failure as VSPC reports it (JSON error body)
    "500", "503"  plain 5xx from a proxy in front (HTML body, not JSON)
    "400"         logical error body
    "403"         security error body: the role may not read this
    "404"         not found: an older console without this endpoint
    "202"         async action; ``polls`` answers "running", then ``final``
    "reset"       full Content-Length, part of the body, then the socket is reset
    "hang"        no answer for ``seconds`` (cut short when the server stops), then the answer
    "slow"        the body trickles in over ``seconds``
    "bad_offset"  page one is served, and offset 0 echoed, whatever offset was asked
    "shift"       the collection changes (``op`` "insert" or "delete") just before the page
                  (every collection but agents and organizations)
    "short"       fewer items than ``limit`` (``count``, default half) though total says more
    "total_zero"  total reported as 0 while data is served
    "bad_json"    the body is cut in half: invalid JSON with a consistent Content-Length
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

JOB_COLLECTIONS = frozenset({"jobs", "linux_jobs", "mac_jobs"})
COLLECTIONS = JOB_COLLECTIONS | {
    "agents",
    "linux_agents",
    "mac_agents",
    "backup_agents",
    "management_agents",
    "restore_points",
    "organizations",
}
ENDPOINTS = COLLECTIONS | {"token", "async"}
PATHS = frozenset(ENDPOINTS | {"any"})

KINDS: dict[str, dict[str, Any]] = {
    "401": {},
    "429": {"retry_after": 1, "header": False},
    "520": {},
    "500": {},
    "503": {},
    "400": {},
    "403": {},
    "404": {},
    "202": {"polls": 1, "final": "succeed"},
    "reset": {},
    "hang": {"seconds": 10.0},
    "slow": {"seconds": 1.0},
    "bad_offset": {},
    "shift": {"op": "insert"},
    "short": {"count": None},
    "total_zero": {},
    "bad_json": {},
}
# Where each kind makes sense; a kind not listed applies to every endpoint.
_APPLIES: dict[str, frozenset[str]] = {
    "401": frozenset(ENDPOINTS - {"token"}),
    "202": COLLECTIONS,
    "bad_offset": COLLECTIONS,
    "short": COLLECTIONS,
    "total_zero": COLLECTIONS,
    # The two oldest collections keep their items in place, as they always did.
    "shift": frozenset(COLLECTIONS - {"agents", "organizations"}),
}
DEFAULT_RANDOM_KINDS = ("429", "520", "503", "reset")


def applies(kind: str, endpoint: str) -> bool:
    """Whether ``kind`` can be injected into a request to ``endpoint``."""
    return endpoint in _APPLIES.get(kind, ENDPOINTS)


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind and its parameters (defaults filled in)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Rule:
    fault: Fault
    path: str
    after: int
    times: int | None

    def matches(self, endpoint: str) -> bool:
        return (self.path in ("any", endpoint)) and applies(self.fault.kind, endpoint)


def make_fault(kind: str, params: dict[str, Any]) -> Fault:
    """Validate ``kind`` and its parameters; unknown parameters are an error, not ignored."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    unknown = set(params) - set(KINDS[kind])
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter {', '.join(sorted(unknown))}")
    merged = {**KINDS[kind], **params}
    if kind == "202" and merged["final"] not in ("succeed", "failed", "canceled"):
        raise ValueError("final must be 'succeed', 'failed' or 'canceled'")
    if kind == "shift" and merged["op"] not in ("insert", "delete"):
        raise ValueError("op must be 'insert' or 'delete'")
    for name in ("retry_after", "polls", "seconds"):
        if name in merged and (not isinstance(merged[name], int | float) or merged[name] < 0):
            raise ValueError(f"{name} must be a number >= 0")
    return Fault(kind, merged)


class FaultPlan:
    """A thread-safe, switchable list of faults to inject."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._random: tuple[float, tuple[str, ...], str, random.Random] | None = None

    def add(
        self,
        kind: str,
        *,
        path: str = "jobs",
        after: int = 0,
        times: int | None = 1,
        **params: Any,
    ) -> None:
        """Skip ``after`` matching requests, then fault the next ``times`` (None: forever)."""
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; known: {', '.join(sorted(PATHS))}")
        if after < 0 or (times is not None and times < 1):
            raise ValueError("after must be >= 0 and times >= 1 (or None)")
        rule = _Rule(make_fault(kind, params), path, after, times)
        with self._lock:
            self._rules.append(rule)

    def random(
        self,
        rate: float,
        kinds: Iterable[str] = DEFAULT_RANDOM_KINDS,
        *,
        seed: int = 0,
        path: str = "jobs",
    ) -> None:
        """Fault each matching request with probability ``rate``, a kind drawn from ``kinds``.

        The draws come from ``random.Random(seed)``: the same requests in the same order get
        the same faults. A rate of 0 switches the random mode off.
        """
        kinds = tuple(kinds)
        for kind in kinds:
            make_fault(kind, {})
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}")
        with self._lock:
            self._random = (rate, kinds, path, random.Random(seed)) if rate and kinds else None

    def clear(self) -> None:
        """Remove every rule and switch the random mode off."""
        with self._lock:
            self._rules.clear()
            self._random = None

    @property
    def pending(self) -> int:
        """How many rules still have faults to inject."""
        with self._lock:
            return len(self._rules)

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request to ``endpoint``, if any; advances every counter."""
        chosen: Fault | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(endpoint):
                    continue
                if rule.after:
                    rule.after -= 1
                elif chosen is None:
                    chosen = rule.fault
                    if rule.times is not None:
                        rule.times -= 1
            self._rules = [rule for rule in self._rules if rule.times != 0]
            if chosen is None and self._random is not None:
                rate, kinds, path, rng = self._random
                if path in ("any", endpoint) and rng.random() < rate:
                    usable = [kind for kind in kinds if applies(kind, endpoint)]
                    if usable:
                        chosen = make_fault(rng.choice(usable), {})
        return chosen
