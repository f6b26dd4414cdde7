"""Restore points, as ``/protectedWorkloads/computersManagedByConsole/restorePoints`` lists them.

A point exists because a backup session succeeded (or ended with a warning): the World adds one
at the session's end, to the chain of its job. A chain keeps as many points as its job's
``restorePoints`` counter says, so retention merges the oldest away and the counter always
agrees with the points listed for the job. Chains without a job stand for jobs an agent runs
on its own (the console lists their points with ``jobUid`` null).

A chain stores only creation instants (integer microseconds); a point's uid, sizes and whether
the console indexed it late are derived from a hash of (seed, chain, ordinal), so a World of a
million jobs keeps its points in a few bytes each and builds the records only when they are
read. About one point in thirty appears in the listing only some hours after its creation.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from etl.simulator import wire

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATE_SHARE = 1 / 30  # share of points the console lists only some hours after their creation
_LATE_MAX_HOURS = 8


_MICROSECOND = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    since = t - _EPOCH
    return (since.days * 86400 + since.seconds) * 1_000_000 + since.microseconds


def instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass
class Chain:
    """The retained points of one job (or of one agent's own job, ``job`` None)."""

    key: str
    agent: str
    job: str | None
    tz: timezone
    digits: int
    destination: str | None
    items: str
    made: int = 0  # points ever made; a point's ordinal is the count before it
    times: array[int] = field(default_factory=lambda: array("q"))  # creation, oldest first
    ordinals: array[int] = field(default_factory=lambda: array("q"))


@dataclass(frozen=True)
class PointFacts:
    uid: str
    size: int
    increment: int
    source: int
    late: timedelta | None


class RestorePoints:
    """Every retained restore point of a console."""

    def __init__(self, seed: int) -> None:
        self._salt = f"vspc-simulator/{seed}/points".encode()
        self.chains: dict[str, Chain] = {}
        self._chains: dict[str, _Listing] = {}
        self._ranks = itertools.count()  # per chain: its entries as rows() last saw them

    def chain(
        self,
        key: str,
        *,
        agent: str,
        job: str | None,
        tz: timezone,
        digits: int,
        destination: str | None,
        items: str,
    ) -> Chain:
        """The chain under ``key``, made on first use; later calls refresh what may change."""
        found = self.chains.get(key)
        if found is None:
            found = self.chains[key] = Chain(key, agent, job, tz, digits, destination, items)
        else:
            found.destination, found.items = destination, items
        return found

    def add(self, chain: Chain, at: datetime, keep: int) -> None:
        """A new point at ``at``; then only the newest ``keep`` points stay."""
        self._insert(chain, _served(micros(at), chain.digits))
        self.trim(chain, keep)

    @staticmethod
    def _insert(chain: Chain, us: int) -> None:
        index = bisect.bisect_right(chain.times, us)
        chain.times.insert(index, us)
        chain.ordinals.insert(index, chain.made)
        chain.made += 1

    def backfill(self, chain: Chain, newest: datetime, step: timedelta, count: int) -> None:
        """Points a chain made before the simulation started: ``count`` of them, ``step``
        apart, the newest at ``newest``; then only those ``count`` stay."""
        last, every = micros(newest), step // _MICROSECOND
        times = [_served(last - every * k, chain.digits) for k in range(count - 1, -1, -1)]
        if chain.times:
            for us in times:
                self._insert(chain, us)
        else:
            chain.times.extend(times)
            chain.ordinals.extend(range(chain.made, chain.made + count))
            chain.made += count
        self.trim(chain, count)

    @staticmethod
    def trim(chain: Chain, keep: int) -> None:
        drop = len(chain.times) - max(0, keep)
        if drop > 0:
            del chain.times[:drop]
            del chain.ordinals[:drop]

    def drop(self, key: str) -> None:
        self.chains.pop(key, None)

    def remove_point(self, uid: str) -> bool:
        """Forget one point (a fault moving items between pages); True if it existed."""
        for chain in self.chains.values():
            for index, ordinal in enumerate(chain.ordinals):
                if self.facts(chain, ordinal).uid == uid:
                    del chain.times[index]
                    del chain.ordinals[index]
                    return True
        return False

    def facts(self, chain: Chain, ordinal: int) -> PointFacts:
        digest = hashlib.blake2b(
            f"{chain.key}/{ordinal}".encode(), digest_size=32, key=self._salt[:64]
        ).digest()
        numbers = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in range(16, 32, 4)]
        source = int(2 ** (30 + 11 * _unit(chain.key)))
        share = 0.45 + 0.25 * numbers[0] if ordinal == 0 else 0.005 + 0.08 * numbers[0]
        size = max(1, int(source * share))
        late = None
        if numbers[2] < LATE_SHARE:
            late = timedelta(hours=1 + (_LATE_MAX_HOURS - 1) * numbers[3])
        return PointFacts(
            uid=wire.uid_text(int.from_bytes(digest[:16], "big")),
            size=size,
            increment=int(size * (1.4 + 1.8 * numbers[1])),
            source=source,
            late=late,
        )

    def rows(self, now: datetime) -> list[dict[str, Any]]:
        """Every point the console lists at ``now``, oldest first (chains in creation order
        for points of the same instant)."""
        limit = micros(now)
        listed: list[tuple[int, int, int, dict[str, Any]]] = []
        chains: dict[str, _Listing] = {}
        for chain in self.chains.values():
            # A chain unchanged since the last call (most of them) reuses its entries.
            state = (chain.made, len(chain.times), chain.times[:1].tolist(), chain.destination)
            cached = self._chains.get(chain.key)
            if cached is None or cached.state != state:
                rank = cached.rank if cached is not None else next(self._ranks)
                entries = self._entries(chain, cached)
                cached = _Listing(state, rank, entries, [(e[0], rank, e[1], e[2]) for e in entries])
                cached.listed_from = max((e[3] for e in entries), default=0)
            chains[chain.key] = cached
            if cached.listed_from <= limit:
                listed.extend(cached.rows)
            else:
                rank = cached.rank
                listed.extend((e[0], rank, e[1], e[2]) for e in cached.entries if e[3] <= limit)
        self._chains = chains  # chains dropped since are forgotten with their records
        listed.sort()  # (creation, rank, ordinal) is unique: records are never compared
        return [item[3] for item in listed]

    def _entries(
        self, chain: Chain, old: _Listing | None
    ) -> list[tuple[int, int, dict[str, Any], int]]:
        """(creation, ordinal, record, listed from) of each point of ``chain``; a point's
        record never changes, so the ones ``old`` holds are kept (hashing and formatting
        ~800,000 points takes seconds), unless the chain's destination changed."""
        known = {}
        if old is not None and old.state[3] == chain.destination:
            known = {e[1]: e for e in old.entries}
        entries = []
        for us, ordinal in zip(chain.times, chain.ordinals, strict=True):
            entry = known.get(ordinal)
            if entry is None:
                record, listed_from = self._record(chain, ordinal, us)
                entry = (us, ordinal, record, listed_from)
            entries.append(entry)
        return entries

    def _record(self, chain: Chain, ordinal: int, us: int) -> tuple[dict[str, Any], int]:
        facts = self.facts(chain, ordinal)
        row = {
            "instanceUid": facts.uid,
            "backupAgentUid": chain.agent,
            "jobUid": chain.job,
            "backedupItems": chain.items,
            "destination": chain.destination,
            "size": facts.size,
            "incrementRawDataSize": facts.increment,
            "sourceSize": facts.source,
            "creationDate": wire.format_timestamp(instant(us), chain.tz, chain.digits),
        }
        late = facts.late // _MICROSECOND if facts.late is not None else 0
        return row, us + late

    def pending(self, now: datetime) -> list[tuple[str, datetime]]:
        """(chain key, creation) of points made but not yet listed at ``now``."""
        limit = micros(now)
        waiting = []
        for chain in self.chains.values():
            for us, ordinal in zip(chain.times, chain.ordinals, strict=True):
                facts = self.facts(chain, ordinal)
                if facts.late is not None and us <= limit < us + facts.late // timedelta(
                    microseconds=1
                ):
                    waiting.append((chain.key, instant(us)))
        return waiting


@dataclass
class _Listing:
    """A chain's points as ``rows`` last built them."""

    state: tuple[Any, ...]
    rank: int  # the chain's place among the chains (their creation order)
    entries: list[tuple[int, int, dict[str, Any], int]]  # creation, ordinal, row, listed from
    rows: list[tuple[int, int, int, dict[str, Any]]]  # creation, rank, ordinal, row
    listed_from: int = 0  # from when every point of the chain is listed


def _served(us: int, digits: int) -> int:
    """An instant as precise as the console writes it: whole seconds when it sends no digits."""
    return us - us % 1_000_000 if digits == 0 else us


def _unit(text: str) -> float:
    """A stable number in [0, 1) for ``text``."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
