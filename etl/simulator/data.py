"""Deterministic VSPC data: organizations, Windows agents, their backup jobs, and time passing.

Everything is drawn from one ``random.Random(seed)``: the same seed and the same calls give the
same records, byte for byte. The truth is kept as dicts in the wire form a console serialises
(enum casing, per-machine UTC offsets, 0/6/7 fractional digits, absent and unknown fields), so
what the server sends is exactly what a test compares against. A stored dict is never changed
in place (a change replaces it), so a reader may serialise the rows it took without a lock.
"""

from __future__ import annotations

import copy
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from etl.simulator import wire

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)


def _count(job: dict[str, Any], key: str) -> int:
    """A numeric field, 0 when absent, null or not a number (a test may have set "four")."""
    value = job.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _uid_number(uid: str) -> int:
    """A uid as the number it spells; one that is not a uuid counts as the largest."""
    try:
        return int(uid.replace("-", ""), 16)
    except ValueError:
        return 2**128


@dataclass(frozen=True)
class _Schedule:
    """When a job runs: every ``period`` from ``anchor``, or monthly on ``day`` at anchor's time."""

    anchor: datetime
    period: timedelta | None
    day: int = 0
    continuous: bool = False

    def next_after(self, t: datetime) -> datetime:
        if self.period is not None:
            return self.anchor + ((t - self.anchor) // self.period + 1) * self.period
        local_anchor = self.anchor.astimezone(self.anchor.tzinfo)
        local = t.astimezone(local_anchor.tzinfo)
        year, month = local.year, local.month
        while True:
            candidate = local_anchor.replace(year=year, month=month, day=self.day)
            if candidate > t:
                return candidate.astimezone(UTC)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def last_at_or_before(self, t: datetime) -> datetime:
        if self.period is not None:
            return self.anchor + ((t - self.anchor) // self.period) * self.period
        occurrence = self.next_after(t - timedelta(days=62))
        while (following := self.next_after(occurrence)) <= t:
            occurrence = following
        return occurrence


@dataclass
class _Machine:
    tz: timezone
    computer: str
    alias: str


@dataclass
class _JobMeta:
    """What the console knows about a job but does not send."""

    tz: timezone
    style: str
    digits: int
    mod_digits: int
    retention: int
    schedule: _Schedule | None
    next_run: datetime | None = None
    running: tuple[datetime, datetime] | None = None  # (start, planned end) of a session


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


class World:
    """Organizations, agents and jobs of one simulated console, with a virtual clock."""

    def __init__(
        self,
        *,
        jobs: int,
        seed: int,
        start: datetime = DEFAULT_START,
        add_rate: float = 0.01,
        delete_rate: float = 0.01,
        change_rate: float = 0.01,
    ) -> None:
        if jobs < 0:
            raise ValueError("jobs must be >= 0")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.version = 0  # bumped by every change, so servers may cache sorted views
        self._now = start.astimezone(UTC)
        self.add_rate, self.delete_rate, self.change_rate = add_rate, delete_rate, change_rate
        self._orgs: dict[str, dict[str, Any]] = {}
        self._agents: dict[str, dict[str, Any]] = {}
        self._machines: dict[str, _Machine] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, _JobMeta] = {}
        rng = self._rng
        self._provider_alias = "cloudsafe"
        self._policies = [(wire.new_uid(rng), name) for name in wire.POLICIES]
        self._build_organizations(max(1, jobs // 20))
        self._build_jobs(jobs)

    # ----------------------------------------------------------------- reading
    @property
    def now(self) -> datetime:
        return self._now

    def rows(self, collection: str) -> list[dict[str, Any]]:
        """The stored dicts of ``jobs``, ``agents`` or ``organizations``; never mutate them."""
        store = {"jobs": self._jobs, "agents": self._agents, "organizations": self._orgs}
        with self._lock:
            return list(store[collection].values())

    def jobs(self) -> list[dict[str, Any]]:
        """Deep copies of every job in wire form, in creation order."""
        return copy.deepcopy(self.rows("jobs"))

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
            job = dict(self._jobs[uid])
            for key, value in fields.items():
                if value is wire.ABSENT:
                    job.pop(key, None)
                else:
                    job[key] = copy.deepcopy(value)
            self._jobs[uid] = job
            self.version += 1
            return copy.deepcopy(job)

    def mutate_organization(self, uid: str, **fields: Any) -> dict[str, Any]:
        """Set wire fields of one organization (a rename, say); returns the new record."""
        with self._lock:
            org = {**self._orgs[uid], **copy.deepcopy(fields)}
            self._orgs[uid] = org
            self.version += 1
            return copy.deepcopy(org)

    def add_job(self, *, first: bool = False, **fields: Any) -> dict[str, Any]:
        """Create a job that never ran, with ``fields`` set on it (``instanceUid`` too).

        Fields holding both ``instanceUid`` and ``status`` (the one required field) are a whole
        record, stored exactly as given: a job that comes back, an example from the vendor's
        page. ``first`` puts the job before all others; a generated uid then sorts first too.
        Returns the stored record.
        """
        with self._lock:
            uid = fields.pop("instanceUid", None)
            if uid in self._jobs:
                raise ValueError(f"job {uid} exists already")
            if uid is not None and "status" in fields:
                record = copy.deepcopy({"instanceUid": uid, **fields})
                self._store(record, self._adopt(record), first=first)
                return copy.deepcopy(record)
            job = self._create_job(self._now, first=first, uid=uid)
            if fields:
                return self.mutate(job["instanceUid"], **fields)
            return copy.deepcopy(job)

    def delete_job(self, uid: str) -> None:
        with self._lock:
            del self._jobs[uid]
            del self._meta[uid]
            self.version += 1

    def touch(self, fraction: float) -> list[str]:
        """Edit ``fraction`` of the jobs in place of time passing (benchmarks: "10 % changed")."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        with self._lock:
            chosen = self._rng.sample(list(self._jobs), round(len(self._jobs) * fraction))
            stamp = wire.format_timestamp(self._now, UTC, 7)
            for uid in chosen:
                job = dict(self._jobs[uid])
                job["lastModifiedDate"] = stamp
                job["restorePoints"] = _count(job, "restorePoints") + 1
                self._jobs[uid] = job
            self.version += 1
            return chosen

    # ------------------------------------------------------------ time passing
    def advance(self, hours: float) -> AdvanceSummary:
        """Let ``hours`` of virtual time pass: scheduled jobs run, jobs come and go."""
        if hours < 0:
            raise ValueError("hours must be >= 0")
        rng = self._rng
        with self._lock:
            t0, t1 = self._now, self._now + timedelta(hours=hours)
            days = hours / 24
            summary = AdvanceSummary(now=t1)
            before = dict(self._jobs)
            for uid, job in before.items():
                self._jobs[uid] = self._advance_job(uid, dict(job), t0, t1, days)
            p_delete = 1 - (1 - self.delete_rate) ** days
            for uid in list(self._jobs):
                if rng.random() < p_delete:
                    self.delete_job(uid)
                    summary.deleted.append(uid)
            p_add = 1 - (1 - self.add_rate) ** days
            for _ in range(sum(rng.random() < p_add for _ in range(len(before)))):
                created = t0 + (t1 - t0) * rng.random()
                uid = self._create_job(created)["instanceUid"]
                self._jobs[uid] = self._advance_job(uid, dict(self._jobs[uid]), created, t1, 0)
                summary.added.append(uid)
            self._now = t1
            self.version += 1
            summary.changed = [
                uid for uid, job in self._jobs.items() if uid in before and before[uid] != job
            ]
            return summary

    def _advance_job(
        self, uid: str, job: dict[str, Any], t0: datetime, t1: datetime, days: float
    ) -> dict[str, Any]:
        rng, meta = self._rng, self._meta[uid]
        if days and rng.random() < 1 - (1 - self.change_rate) ** days:
            when = t0 + (t1 - t0) * rng.random()
            if rng.random() < 0.5:
                job["isEnabled"] = not job.get("isEnabled", True)
                meta.next_run = None
            else:
                job["name"] = f"{job.get('name') or 'Backup Job'} v{rng.randint(2, 9)}"
            job["lastModifiedDate"] = wire.format_timestamp(when, meta.tz, meta.mod_digits)
            machine = self._machines.get(job.get("backupAgentUid", ""))
            job["lastModifiedBy"] = self._modified_by(machine.alias if machine else "vspc")
        if meta.running is not None:
            start, planned_end = meta.running
            self._finish(job, meta, start, min(planned_end, t1))
        if not (job.get("isEnabled") and meta.schedule is not None):
            meta.next_run = None
            job["nextRun"] = None
            return job
        schedule = meta.schedule
        first = meta.next_run if meta.next_run is not None else schedule.next_after(t0)
        if first <= t1:
            last = schedule.last_at_or_before(t1)
            runs = 1 + ((last - first) // schedule.period if schedule.period else 0)
            for _ in range(min(runs - 1, meta.retention)):  # earlier sessions of the window
                self._grow(job, meta)
            start = last + timedelta(seconds=rng.uniform(0, 30))
            end = start + timedelta(seconds=self._duration(job))
            job["lastRun"] = wire.format_timestamp(start, meta.tz, meta.digits)
            if end > t1:
                job["status"] = wire.spell("Running", meta.style)
                meta.running = (start, end)
            else:
                self._finish(job, meta, start, end)
        meta.next_run = schedule.next_after(t1)
        job["nextRun"] = (
            None
            if schedule.continuous
            else wire.format_timestamp(meta.next_run, meta.tz, meta.digits)
        )
        return job

    def _finish(self, job: dict[str, Any], meta: _JobMeta, start: datetime, end: datetime) -> None:
        rng = self._rng
        outcome = rng.choices(("Success", "Warning", "Failed"), (88, 6, 6))[0]
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
        meta.running = None

    def _grow(self, job: dict[str, Any], meta: _JobMeta) -> None:
        """A successful session: one more restore point, more bytes, less free space."""
        rng = self._rng
        points = _count(job, "restorePoints")
        size = _count(job, "backedUpSize")
        delta = int(size * rng.uniform(0.005, 0.05)) if size else int(2 ** rng.uniform(27, 41))
        if points >= meta.retention:  # the oldest point is merged away
            delta = int(delta * rng.uniform(-0.5, 0.5))
        job["restorePoints"] = min(meta.retention, points + 1)
        job["backedUpSize"] = max(0, size + delta)
        free = _count(job, "freeSpace") or int(2 ** rng.uniform(33, 43))
        job["freeSpace"] = max(0, free - delta)

    def _duration(self, job: dict[str, Any]) -> float:
        average = _count(job, "avgDuration") or 600
        return max(5.0, average * self._rng.uniform(0.5, 1.6)) + self._rng.random()

    # ------------------------------------------------------------- generation
    def _build_organizations(self, count: int) -> None:
        rng = self._rng
        pool = list(wire.ORGS)
        rng.shuffle(pool)
        for i in range(count):
            if i == 0:
                name, alias, kind = "CloudSafe Service Provider", self._provider_alias, "Provider"
            else:
                name, alias = pool[(i - 1) % len(pool)]
                if i > len(pool):
                    name, alias = f"{name} {i // len(pool) + 1}", f"{alias}{i // len(pool) + 1}"
                kind = "Reseller" if i == 1 and count >= 4 else "Company"
            uid = wire.new_uid(rng)
            self._orgs[uid] = {"instanceUid": uid, "name": name, "alias": alias, "type": kind}

    def _add_agent(self, org_uid: str) -> str:
        self.version += 1
        rng = self._rng
        alias = self._orgs[org_uid]["alias"]
        number = len(self._agents) + 1
        if rng.random() < 0.15:
            computer = f"{rng.choice(wire.SPECIAL_PCS)}-{number}"
        else:
            kind = rng.choice(("WS", "WS", "LT", "SRV"))
            computer = f"{alias[:6].upper()}-{kind}{number:02d}"
        uid = wire.new_uid(rng)
        self._machines[uid] = _Machine(
            tz=timezone(timedelta(minutes=rng.choice(wire.OFFSETS))), computer=computer, alias=alias
        )
        self._agents[uid] = {
            "instanceUid": uid,
            "agentPlatform": "Windows",
            "name": computer,
            "organizationUid": org_uid,
            "version": rng.choice(("6.1.2.134", "6.2.0.121", "6.3.0.177", "5.0.3.4708")),
            "status": rng.choices(("Active", "Inaccessible", "Error"), (90, 8, 2))[0],
        }
        return uid

    def _build_jobs(self, count: int) -> None:
        rng = self._rng
        picks = {name: self._draw(name, values, count) for name, values in wire.ENUMS.items()}
        events = self._draw_events(count)
        legacy = set(rng.sample(range(count), round(count * 0.1)))
        future = set(rng.sample(range(count), max(1, round(count * 0.02)) if count >= 20 else 0))
        org_uids = list(self._orgs)
        index = 0
        while index < count:
            agent = self._add_agent(rng.choice(org_uids))
            for _ in range(min(rng.choice((1, 1, 2, 2, 3)), count - index)):
                chosen = {name: values[index] for name, values in picks.items()}
                self._store(
                    *self._make_job(
                        agent,
                        chosen,
                        events[index],
                        self._now,
                        legacy=index in legacy,
                        future=index in future,
                        backdate=True,
                    )
                )
                index += 1

    def _draw(self, name: str, values: tuple[str, ...], count: int) -> list[str]:
        """``count`` weighted draws; from 50 jobs on, every value appears at least once."""
        forced = list(values) if count >= 50 else []
        drawn = forced + self._rng.choices(values, wire.WEIGHTS[name], k=count - len(forced))
        self._rng.shuffle(drawn)
        return drawn

    def _draw_events(self, count: int) -> list[list[str]]:
        rng = self._rng
        lists = [
            sorted(
                set(rng.choices(wire.SCHEDULE_EVENTS, (40, 30, 28, 2), k=rng.choice((1, 1, 2)))),
                key=wire.SCHEDULE_EVENTS.index,
            )
            if rng.random() < 0.3
            else []
            for _ in range(count)
        ]
        if count >= 50:
            for event in wire.SCHEDULE_EVENTS:
                if not any(event in chosen for chosen in lists):
                    lists[rng.randrange(count)].append(event)
        return lists

    def _store(self, job: dict[str, Any], meta: _JobMeta, first: bool = False) -> None:
        uid = job["instanceUid"]
        self.version += 1
        self._meta[uid] = meta
        if first:
            self._jobs = {uid: job, **self._jobs}
        else:
            self._jobs[uid] = job

    def _create_job(
        self, created: datetime, *, first: bool = False, uid: str | None = None
    ) -> dict[str, Any]:
        rng = self._rng
        if not self._agents or rng.random() < 0.3:
            agent = self._add_agent(rng.choice(list(self._orgs)))
        else:
            agent = rng.choice(list(self._agents))
        chosen = {
            name: rng.choices(values, wire.WEIGHTS[name])[0] for name, values in wire.ENUMS.items()
        }
        chosen["status"] = "None"
        if uid is None and first and self._jobs:
            lowest = min(_uid_number(u) for u in self._jobs)
            uid = wire.new_uid(rng, rng.randrange(lowest // 2, lowest) if lowest > 1 else 0)
        job, meta = self._make_job(agent, chosen, [], created, legacy=False, future=False, uid=uid)
        self._store(job, meta, first=first)
        return job

    def _modified_by(self, alias: str) -> str | None:
        user = self._rng.choice(wire.USERS)
        template = self._rng.choice(wire.MODIFIERS)
        return wire.fill(template, ALIAS=alias.upper(), alias=alias, user=user)

    def _adopt(self, record: dict[str, Any]) -> _JobMeta:
        """Hidden state for a record given whole, from what the record itself tells."""
        stamp = None
        for key in ("nextRun", "lastRun"):
            if isinstance(record.get(key), str):
                stamp = stamp or wire.parse_instant(record[key])
        tz = stamp.tzinfo if stamp and isinstance(stamp.tzinfo, timezone) else UTC
        spelled = str(record.get("scheduleType")).lower()
        kind = next((v for v in wire.ENUMS["scheduleType"] if v.lower() == spelled), "Unknown")
        status = str(record.get("status") or "")
        return _JobMeta(
            tz=tz,
            style="lower" if status.islower() else "spec",
            digits=0,
            mod_digits=7,
            retention=7,
            schedule=self._make_schedule(kind, tz),
        )

    def _make_schedule(self, kind: str, tz: timezone) -> _Schedule | None:
        rng = self._rng
        hour = rng.choice((0, 1, 2, 3, 12, 18, 20, 21, 22, 23))
        anchor = datetime(2020, 1, 1, hour, rng.choice((0, 15, 30)), tzinfo=tz).astimezone(UTC)
        if kind == "Daily":
            return _Schedule(anchor, timedelta(days=1))
        if kind == "Periodically":
            return _Schedule(anchor, timedelta(hours=rng.choice((1, 2, 4, 6, 8, 12))))
        if kind == "Continuously":
            return _Schedule(anchor, timedelta(hours=1), continuous=True)
        if kind == "Monthly":
            return _Schedule(anchor.astimezone(tz), None, day=rng.randint(1, 28))
        return None  # NotScheduled, Unknown: only started by hand or by events

    def _make_job(
        self,
        agent_uid: str,
        chosen: dict[str, str],
        events: list[str],
        created: datetime,
        *,
        legacy: bool,
        future: bool,
        backdate: bool = False,
        uid: str | None = None,
    ) -> tuple[dict[str, Any], _JobMeta]:
        """One job in wire form; ``backdate`` makes it older than ``created`` (initial data)."""
        rng, now = self._rng, self._now
        machine, agent = self._machines[agent_uid], self._agents[agent_uid]
        style = rng.choices(("spec", "lower", "camel"), (45, 45, 10))[0]
        meta = _JobMeta(
            tz=machine.tz,
            style=style,
            digits=rng.choice((0, 0, 6, 7, 7)),
            mod_digits=rng.choice((6, 7, 7)),
            retention=rng.choice((3, 7, 7, 14, 14, 30)),
            schedule=self._make_schedule(chosen["scheduleType"], machine.tz),
        )
        enabled = rng.random() > 0.08
        status = chosen["status"]
        assign = chosen["backupPolicyAssignStatus"]
        # A job made by hand is Custom, Unassigned or Unknown; every other status has a policy.
        by_hand = assign in ("Custom", "Unassigned", "Unknown")
        policy = None if by_hand else rng.choice(self._policies)
        computer = machine.computer
        names = {"computer": computer, "alias": machine.alias}
        name = (
            f"{policy[1]}_{computer}" if policy else wire.fill(rng.choice(wire.JOB_NAMES), **names)
        )
        destination = {
            "Local": wire.fill(rng.choice(wire.LOCAL_TARGETS), **names),
            "Cloud": f"Cloud repository {self._provider_alias}-cc01 ({machine.alias})",
            "Unknown": None,
        }[chosen["targetType"]]
        modified = created - timedelta(days=rng.uniform(0, 400)) if backdate else created
        job: dict[str, Any] = {
            "instanceUid": uid or wire.new_uid(rng),
            "backupAgentUid": agent_uid,
            "organizationUid": agent["organizationUid"],
            "name": None if rng.random() < 0.01 else name,
            "description": wire.fill(rng.choice(wire.DESCRIPTIONS), modified=modified),
            "configUid": wire.new_uid(rng),
            "backupPolicyUid": policy[0] if policy else None,
            "backupPolicyName": policy[1] if policy else None,
            "backupPolicyAssignStatus": wire.spell(assign, style),
            "backupPolicyFailureMessage": (
                rng.choice(wire.POLICY_FAILURES)
                if assign in ("FailedToApply", "Warning", "Outdated")
                else None
            ),
            "status": wire.spell(status, style),
            "operationMode": wire.spell(chosen["operationMode"], style),
            "destination": destination,
            "restorePoints": 0,
            "lastRun": None,
            "lastEndTime": None,
            "lastDuration": None,
            "nextRun": None,
            "avgDuration": None,
            "backupMode": wire.spell(chosen["backupMode"], style),
            "targetType": wire.spell(chosen["targetType"], style),
            "isEnabled": enabled,
            "scheduleType": wire.spell(chosen["scheduleType"], style),
            "scheduleEvents": [wire.spell(event, style) for event in events],
            "lastModifiedDate": wire.format_timestamp(modified, meta.tz, meta.mod_digits),
            "lastModifiedBy": self._modified_by(machine.alias),
            "failureMessage": None,
            "backedUpSize": 0,
            "freeSpace": None,
        }
        if status != "None":
            self._fill_history(job, meta, status, enabled)
        if enabled and meta.schedule is not None:
            meta.next_run = meta.schedule.next_after(max(now, created))
            if not meta.schedule.continuous:
                job["nextRun"] = wire.format_timestamp(meta.next_run, meta.tz, meta.digits)
        for key in wire.LEGACY_ABSENT if legacy else ():
            del job[key]
        if future:
            job.update(copy.deepcopy(rng.choice(wire.FUTURE_FIELDS)))
        return job, meta

    def _fill_history(
        self, job: dict[str, Any], meta: _JobMeta, status: str, enabled: bool
    ) -> None:
        """Give a job that has run its latest session, ending before now (or still running)."""
        rng, now = self._rng, self._now

        def ts(dt: datetime) -> str:
            return wire.format_timestamp(dt, meta.tz, meta.digits)

        average = int(min(4 * 3600, max(20, rng.lognormvariate(6.3, 0.9))))
        duration = average * rng.uniform(0.6, 1.5) + rng.random()
        for _ in range(rng.randint(1, meta.retention)):
            self._grow(job, meta)
        job["avgDuration"] = average
        if status in ("Running", "Starting", "Stopping"):
            start = now - timedelta(seconds=duration * rng.uniform(0.05, 0.9))
            meta.running = (start, start + timedelta(seconds=duration))
            job["lastRun"] = ts(start)
            if rng.random() < 0.8:  # the previous session's end stays until this one ends
                job["lastEndTime"] = ts(start - timedelta(hours=rng.uniform(1, 48)))
                job["lastDuration"] = int(average * rng.uniform(0.6, 1.5))
            return
        if enabled and meta.schedule is not None:
            start = meta.schedule.last_at_or_before(now - timedelta(seconds=duration + 60))
        else:
            start = now - timedelta(days=rng.uniform(0.1, 60))
        start += timedelta(seconds=rng.uniform(0, 30))
        job["lastRun"] = ts(start)
        job["lastEndTime"] = ts(start + timedelta(seconds=duration))
        job["lastDuration"] = int(duration)
        if status in ("Warning", "Failed"):
            job["failureMessage"] = rng.choice(
                wire.WARNINGS if status == "Warning" else wire.FAILURES
            )
