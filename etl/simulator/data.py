"""Deterministic VSPC data: organizations, agents of every platform, their backup jobs, restore
points, and time passing.

Windows jobs and agents are drawn from one ``random.Random(seed)``; Linux jobs, Mac jobs, the
computers' vendor fields (:mod:`etl.simulator.agents`) and restore points
(:mod:`etl.simulator.points`) each from a stream of their own derived from the seed, so a
Windows-only World is the same whatever the others do. The same seed and the same calls give
the same records, byte for byte. The truth is kept as dicts in the wire form a console serialises
(enum casing, per-machine UTC offsets, 0/6/7 fractional digits, absent and unknown fields), so
what the server sends is exactly what a test compares against. A stored dict is never changed
in place (a change replaces it), so a reader may serialise the rows it took without a lock.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from etl.simulator import wire
from etl.simulator.agents import Fleet
from etl.simulator.clock import Schedule
from etl.simulator.generate import Generator, _count, _JobMeta
from etl.simulator.points import RestorePoints, instant

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class AdvanceSummary:
    """What one :meth:`World.advance` did."""

    now: datetime
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "changed": self.changed,
            "added": self.added,
            "deleted": self.deleted,
        }


_SHARES = {"windows": 7, "linux": 2, "mac": 1}  # how ``jobs`` is split over the platforms
JOB_COLLECTIONS = {"jobs": "windows", "linux_jobs": "linux", "mac_jobs": "mac"}
AGENT_COLLECTIONS = {"agents": "windows", "linux_agents": "linux", "mac_agents": "mac"}


def job_counts(jobs: int, platforms: tuple[str, ...]) -> dict[str, int]:
    """``jobs`` split over ``platforms`` by share; the first platform takes the remainder."""
    total = sum(_SHARES[p] for p in platforms)
    counts = {p: jobs * _SHARES[p] // total for p in platforms[1:]}
    return {platforms[0]: jobs - sum(counts.values()), **counts}


class World(Generator):
    """Organizations, agents and jobs of one simulated console, with a virtual clock.

    ``platforms`` decides which agents and jobs exist (``jobs`` is split over them, most to
    Windows; all three by default). ``outage_rate``: the chance per computer per day of going
    offline for a while.
    """

    def __init__(
        self,
        *,
        jobs: int,
        seed: int,
        start: datetime = DEFAULT_START,
        add_rate: float = 0.01,
        delete_rate: float = 0.01,
        change_rate: float = 0.01,
        platforms: Iterable[str] = wire.PLATFORMS,
        outage_rate: float = 0.0,
    ) -> None:
        if jobs < 0:
            raise ValueError("jobs must be >= 0")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.platforms = _platforms(platforms)
        self._rng = random.Random(seed)
        self._streams = {"windows": self._rng} | {
            p: random.Random(f"vspc-simulator/{seed}/{p}") for p in wire.PLATFORMS[1:]
        }
        self._extra = random.Random(f"vspc-simulator/{seed}/world")
        self._fleet = Fleet(seed, outage_rate)
        self._points = RestorePoints(seed)
        self._own_jobs: dict[str, Schedule] = {}  # agent uid -> its agent-managed job
        self._lock = threading.RLock()
        self.version = 0  # bumped by every change, so servers may cache sorted views
        self._now = start.astimezone(UTC)
        self.add_rate, self.delete_rate, self.change_rate = add_rate, delete_rate, change_rate
        self._orgs, self._agents, self._machines, self._meta = {}, {}, {}, {}
        self._stores = {p: {} for p in wire.PLATFORMS}
        rng = self._rng
        self._provider_alias = "cloudsafe"
        self._policies = [(wire.new_uid(rng), name) for name in wire.POLICIES]
        self._build_organizations(max(1, jobs // 20))
        self._building = True
        for platform, count in job_counts(jobs, self.platforms).items():
            self._build_jobs(count, platform)
        self._building = False
        for uid, org in self._orgs.items():
            if self._extra.random() < 0.3:
                self._fleet.add_lonely(uid, org["alias"], self._now)

    @property
    def _jobs(self) -> dict[str, dict[str, Any]]:
        """The Windows jobs (the collection every existing caller means by "jobs")."""
        return self._stores["windows"]

    @_jobs.setter
    def _jobs(self, value: dict[str, dict[str, Any]]) -> None:
        self._stores["windows"] = value

    # ----------------------------------------------------------------- reading
    @property
    def now(self) -> datetime:
        return self._now

    def rows(self, collection: str) -> list[dict[str, Any]]:
        """The records a collection serves (``jobs``, ``linux_jobs``, ``mac_jobs``, ``agents``,
        ``linux_agents``, ``mac_agents``, ``backup_agents``, ``management_agents``,
        ``restore_points``, ``organizations``), in the console's order; never mutate them."""
        with self._lock:
            if collection in JOB_COLLECTIONS:
                return list(self._stores[JOB_COLLECTIONS[collection]].values())
            if collection in AGENT_COLLECTIONS:
                return self._fleet.platform_agents(AGENT_COLLECTIONS[collection])
            if collection == "backup_agents":
                every = [job for store in self._stores.values() for job in store.values()]
                return self._fleet.backup_agents(self._now, every)
            if collection == "management_agents":
                return self._fleet.management_agents(self._now)
            if collection == "restore_points":
                return self._points.rows(self._now)
            if collection == "organizations":
                return list(self._orgs.values())
        raise KeyError(collection)

    def jobs(self, platform: str = "windows") -> list[dict[str, Any]]:
        """Deep copies of every job of ``platform`` in wire form, in creation order."""
        return copy.deepcopy(list(self._stores[platform].values()))

    def restore_points(self) -> list[dict[str, Any]]:
        """Every restore point listed now, oldest first."""
        return self.rows("restore_points")

    def pending_points(self) -> list[tuple[str, datetime]]:
        """(job uid or ``agent/<uid>``, creation) of points made but not listed yet."""
        with self._lock:
            return self._points.pending(self._now)

    def computer_offline_since(self, agent_uid: str) -> datetime | None:
        """When the computer of a backup agent went offline, if it is offline now."""
        return self._fleet.offline_since(agent_uid, self._now)

    def agents(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.rows("agents"))

    def organizations(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.rows("organizations"))

    # ------------------------------------------------------------- test helpers
    def mutate(self, uid: str, **fields: Any) -> dict[str, Any]:
        """Set wire fields of one job as given (``ABSENT`` removes one); returns the new record."""
        if "instanceUid" in fields:
            raise ValueError("instanceUid cannot be changed")
        with self._lock:
            store = self._store_of(uid)
            job = dict(store[uid])
            for key, value in fields.items():
                if value is wire.ABSENT:
                    job.pop(key, None)
                else:
                    job[key] = copy.deepcopy(value)
            store[uid] = job
            self.version += 1
            return copy.deepcopy(job)

    def _store_of(self, uid: str) -> dict[str, dict[str, Any]]:
        for store in self._stores.values():
            if uid in store:
                return store
        raise KeyError(uid)

    def mutate_organization(self, uid: str, **fields: Any) -> dict[str, Any]:
        """Set wire fields of one organization (a rename, say); returns the new record."""
        with self._lock:
            org = {**self._orgs[uid], **copy.deepcopy(fields)}
            self._orgs[uid] = org
            self.version += 1
            return copy.deepcopy(org)

    def add_job(
        self, *, first: bool = False, platform: str = "windows", **fields: Any
    ) -> dict[str, Any]:
        """Create a job of ``platform`` that never ran, with ``fields`` set on it
        (``instanceUid`` too).

        Fields holding both ``instanceUid`` and ``status`` (the one required field) are a whole
        record, stored exactly as given: a job that comes back, an example from the vendor's
        page (its restore points start with its next session). ``first`` puts the job before
        all others; a generated uid then sorts first too. Returns the stored record.
        """
        with self._lock:
            uid = fields.pop("instanceUid", None)
            if any(uid in store for store in self._stores.values()):
                raise ValueError(f"job {uid} exists already")
            if uid is not None and "status" in fields:
                record = copy.deepcopy({"instanceUid": uid, **fields})
                self._store(record, self._adopt(record, platform), first=first)
                return copy.deepcopy(record)
            job = self._create_job(self._now, first=first, uid=uid, platform=platform)
            if fields:
                return self.mutate(job["instanceUid"], **fields)
            return copy.deepcopy(job)

    def delete_job(self, uid: str) -> None:
        """Delete a job; its restore points go with it."""
        with self._lock:
            del self._store_of(uid)[uid]
            del self._meta[uid]
            self._points.drop(uid)
            self.version += 1

    def shift(self, collection: str, op: str, front: str | None) -> None:
        """An item appears at the front of ``collection``, or the ``front`` one vanishes."""
        with self._lock:
            if collection in JOB_COLLECTIONS:
                if op == "insert":
                    self.add_job(first=True, platform=JOB_COLLECTIONS[collection])
                elif front is not None:
                    self.delete_job(front)
                return
            if collection == "restore_points":
                chains = [chain for chain in self._points.chains.values() if chain.times]
                if op == "insert" and chains:  # an old point indexed only now: it sorts first
                    oldest = min(chain.times[0] for chain in chains)
                    chain = chains[0]
                    at = instant(oldest) - timedelta(minutes=1)
                    self._points.add(chain, at, len(chain.times) + 1)
                elif front is not None:
                    self._points.remove_point(front)
            elif op == "insert":
                platform = AGENT_COLLECTIONS.get(collection, "windows")
                org = self._extra.choice(list(self._orgs))
                self._add_agent(org, platform, first=True)
            elif front is not None:
                self._fleet.retire(front)
            self.version += 1

    def touch(self, fraction: float) -> list[str]:
        """Edit ``fraction`` of the jobs of every platform in place of time passing (benchmarks:
        "10 % changed")."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        with self._lock:
            chosen: list[str] = []
            stamp = wire.format_timestamp(self._now, UTC, 7)
            for platform in wire.PLATFORMS:  # each platform's share, from its own stream
                store = self._stores[platform]
                rng = self._streams[platform]
                picked = rng.sample(list(store), round(len(store) * fraction))
                for uid in picked:
                    job = dict(store[uid])
                    job["lastModifiedDate"] = stamp
                    job["restorePoints"] = _count(job, "restorePoints") + 1
                    store[uid] = job
                    self._point(job, self._meta[uid], self._now)
                chosen.extend(picked)
            self.version += 1
            return chosen

    # ------------------------------------------------------------ time passing
    def advance(self, hours: float) -> AdvanceSummary:
        """Let ``hours`` of virtual time pass: scheduled jobs run, jobs come and go."""
        if hours < 0:
            raise ValueError("hours must be >= 0")
        with self._lock:
            t0, t1 = self._now, self._now + timedelta(hours=hours)
            summary = AdvanceSummary(now=t1)
            self._fleet.advance(t0, t1)
            for platform in wire.PLATFORMS:
                self._advance_platform(platform, t0, t1, hours / 24, summary)
            for agent, schedule in self._own_jobs.items():
                for at in self._runs(agent, schedule, schedule.next_after(t0), t0, t1):
                    self._own_point(agent, at)
            self._now = t1
            self.version += 1
            return summary

    def _advance_platform(
        self, platform: str, t0: datetime, t1: datetime, days: float, summary: AdvanceSummary
    ) -> None:
        rng, store = self._streams[platform], self._stores[platform]
        before = dict(store)
        for uid, job in before.items():
            store[uid] = self._advance_job(uid, dict(job), t0, t1, days)
        p_delete = 1 - (1 - self.delete_rate) ** days
        for uid in list(store):
            if rng.random() < p_delete:
                self.delete_job(uid)
                summary.deleted.append(uid)
        p_add = 1 - (1 - self.add_rate) ** days
        for _ in range(sum(rng.random() < p_add for _ in range(len(before)))):
            created = t0 + (t1 - t0) * rng.random()
            uid = self._create_job(created, platform=platform)["instanceUid"]
            store = self._stores[platform]
            store[uid] = self._advance_job(uid, dict(store[uid]), created, t1, 0)
            summary.added.append(uid)
        summary.changed += [
            uid for uid, job in store.items() if uid in before and before[uid] != job
        ]

    def _runs(
        self, agent: str, schedule: Schedule, first: datetime, t0: datetime, t1: datetime
    ) -> list[datetime]:
        """Occurrences from ``first`` to ``t1`` while the agent's computer is reachable."""
        spans = self._fleet.online_spans(agent, t0, t1)
        if spans is None:
            spans = [(t0, t1)]
        return [at for low, high in spans for at in schedule.between(max(low, first), high)]

    def _advance_job(
        self, uid: str, job: dict[str, Any], t0: datetime, t1: datetime, days: float
    ) -> dict[str, Any]:
        meta = self._meta[uid]
        rng = self._streams[meta.platform]
        if days and rng.random() < 1 - (1 - self.change_rate) ** days:
            when = t0 + (t1 - t0) * rng.random()
            if rng.random() < 0.5:
                job["isEnabled"] = not job.get("isEnabled", True)
                meta.next_run = None
            else:
                job["name"] = f"{job.get('name') or 'Backup Job'} v{rng.randint(2, 9)}"
            job["lastModifiedDate"] = wire.format_timestamp(when, meta.tz, meta.mod_digits)
            machine = self._machines.get(job.get("backupAgentUid", ""))
            job["lastModifiedBy"] = self._modified_by(machine.alias if machine else "vspc", rng)
        agent = str(job.get("backupAgentUid"))
        if meta.running is not None:
            start, planned_end = meta.running
            self._finish(job, meta, start, min(planned_end, t1), agent)
        if not (job.get("isEnabled") and meta.schedule is not None):
            meta.next_run = None
            job["nextRun"] = None
            return job
        schedule = meta.schedule
        first = meta.next_run if meta.next_run is not None else schedule.next_after(t0)
        if self._fleet.online_spans(agent, t0, t1) is not None:  # offline for a while
            runs_at = self._runs(agent, schedule, first, t0, t1)
            earlier, last = runs_at[-1 - meta.retention : -1], runs_at[-1] if runs_at else None
        elif first <= t1:
            last = schedule.last_at_or_before(t1)
            runs = 1 + ((last - first) // schedule.period if schedule.period else 0)
            count = min(runs - 1, meta.retention)
            earlier = [last - schedule.spacing * k for k in range(count, 0, -1)]
        else:
            last = None
        if last is not None:
            average = timedelta(seconds=_count(job, "avgDuration") or 600)
            for at in earlier:  # earlier sessions of the window
                self._grow(job, meta)
                self._point(job, meta, min(at + average, last))
            start = last + timedelta(seconds=rng.uniform(0, 30))
            end = start + timedelta(seconds=self._duration(job, rng))
            job["lastRun"] = wire.format_timestamp(start, meta.tz, meta.digits)
            if end > t1:
                job["status"] = wire.spell("Running", meta.style)
                meta.running = (start, end)
            else:
                self._finish(job, meta, start, end, agent)
        meta.next_run = schedule.next_after(t1)
        job["nextRun"] = (
            None
            if schedule.continuous
            else wire.format_timestamp(meta.next_run, meta.tz, meta.digits)
        )
        return job

    def _finish(
        self, job: dict[str, Any], meta: _JobMeta, start: datetime, end: datetime, agent: str
    ) -> None:
        """A session ends; one its computer dropped out of fails when the computer did."""
        rng = self._streams[meta.platform]
        outcome = rng.choices(("Success", "Warning", "Failed"), (88, 6, 6))[0]
        cut = self._fleet.offline_between(agent, start, end)
        if cut is not None:
            outcome, end = "Failed", max(start, cut)
        duration = max(1, int((end - start).total_seconds()))
        job["status"] = wire.spell(outcome, meta.style)
        job["lastEndTime"] = wire.format_timestamp(end, meta.tz, meta.digits)
        job["lastDuration"] = duration
        job["avgDuration"] = round(((_count(job, "avgDuration") or duration) * 4 + duration) / 5)
        job["failureMessage"] = {
            "Success": None,
            "Warning": rng.choice(wire.WARNINGS),
            "Failed": rng.choice(wire.FAILURES),
        }[outcome]
        if outcome != "Failed":
            self._grow(job, meta)
            self._point(job, meta, end)
        meta.running = None


def _platforms(platforms: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in platforms))
    unknown = [p for p in chosen if p not in wire.PLATFORMS]
    if unknown or not chosen:
        known, got = ", ".join(wire.PLATFORMS), ", ".join(unknown) or "none"
        raise ValueError(f"platforms must be some of {known}; got {got}")
    return chosen
