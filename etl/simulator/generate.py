"""How the World makes its records: organizations, agents, jobs with their history, and what
a session leaves behind (bytes, restore points). :class:`etl.simulator.data.World` builds on it.

Windows records come from the World's main ``random.Random(seed)``, Linux and Mac ones from
streams of their own (``_streams``), in an order that never depends on the other platforms.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from etl.simulator import wire
from etl.simulator.agents import Fleet
from etl.simulator.clock import Schedule
from etl.simulator.points import Chain, RestorePoints


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


@dataclass
class _Machine:
    tz: timezone
    computer: str
    alias: str
    platform: str = "windows"
    organization: str = ""


@dataclass
class _JobMeta:
    """What the console knows about a job but does not send."""

    tz: timezone
    style: str
    digits: int
    mod_digits: int
    retention: int
    schedule: Schedule | None
    next_run: datetime | None = None
    running: tuple[datetime, datetime] | None = None  # (start, planned end) of a session
    platform: str = "windows"


_MODES = {value.casefold(): value for value in wire.ENUMS["backupMode"]}


class Generator:
    """Record making, shared by every platform; the World holds the state it fills."""

    _rng: random.Random
    _streams: dict[str, random.Random]
    _extra: random.Random
    _fleet: Fleet
    _points: RestorePoints
    _own_jobs: dict[str, Schedule]
    _orgs: dict[str, dict[str, Any]]
    _agents: dict[str, dict[str, Any]]
    _machines: dict[str, _Machine]
    _stores: dict[str, dict[str, dict[str, Any]]]
    _meta: dict[str, _JobMeta]
    _now: datetime
    _building: bool
    _provider_alias: str
    _policies: list[tuple[str, str]]
    version: int

    def _grow(self, job: dict[str, Any], meta: _JobMeta) -> None:
        """A successful session: one more restore point, more bytes, less free space."""
        rng = self._streams[meta.platform]
        points = _count(job, "restorePoints")
        size = _count(job, "backedUpSize")
        delta = int(size * rng.uniform(0.005, 0.05)) if size else int(2 ** rng.uniform(27, 41))
        if points >= meta.retention:  # the oldest point is merged away
            delta = int(delta * rng.uniform(-0.5, 0.5))
        job["restorePoints"] = min(meta.retention, points + 1)
        job["backedUpSize"] = max(0, size + delta)
        free = _count(job, "freeSpace") or int(2 ** rng.uniform(33, 43))
        job["freeSpace"] = max(0, free - delta)

    @staticmethod
    def _duration(job: dict[str, Any], rng: random.Random) -> float:
        average = _count(job, "avgDuration") or 600
        return max(5.0, average * rng.uniform(0.5, 1.6)) + rng.random()

    # ------------------------------------------------------------- restore points
    def _point(self, job: dict[str, Any], meta: _JobMeta, at: datetime) -> None:
        """The restore point a successful session of ``job`` made at ``at``."""
        points = job.get("restorePoints")
        keep = points if isinstance(points, int) and not isinstance(points, bool) else 0
        chain = self._points.chains.get(job["instanceUid"])
        if chain is None or chain.destination != job.get("destination"):
            chain = self._chain(job, meta)
        self._points.add(chain, at, keep or meta.retention)

    def _chain(self, job: dict[str, Any], meta: _JobMeta) -> Chain:
        spec = _MODES.get(str(job.get("backupMode") or "").casefold(), "Unknown")
        return self._points.chain(
            job["instanceUid"],
            agent=str(job.get("backupAgentUid")),
            job=job["instanceUid"],
            tz=meta.tz,
            digits=meta.digits,
            destination=job.get("destination"),
            items=wire.BACKED_UP_ITEMS[meta.platform].get(spec, "Unknown"),
        )

    def _own_point(self, agent: str, at: datetime) -> None:
        """A point of the job an agent runs on its own (the console knows no such job)."""
        machine = self._machines[agent]
        chain = self._points.chain(
            f"agent/{agent}",
            agent=agent,
            job=None,
            tz=machine.tz,
            digits=7,
            destination=wire.UNIX_TARGETS.get(machine.platform, {}).get(
                "LocalFolder", ("D:\\VeeamBackup",)
            )[0],
            items="Entire computer",
        )
        self._points.add(chain, at, 7)

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

    def _add_agent(self, org_uid: str, platform: str = "windows", first: bool = False) -> str:
        self.version += 1
        rng = self._streams[platform]
        alias = self._orgs[org_uid]["alias"]
        if platform == "windows":
            number = len(self._agents) + 1
            if rng.random() < 0.15:
                computer = f"{rng.choice(wire.SPECIAL_PCS)}-{number}"
            else:
                kind = rng.choice(("WS", "WS", "LT", "SRV"))
                computer = f"{alias[:6].upper()}-{kind}{number:02d}"
        else:
            number = len(self._machines) + 1
            host = rng.choice(wire.LINUX_HOSTS if platform == "linux" else wire.MAC_HOSTS)
            computer = f"{alias[:6].lower()}-{host}{number:02d}"
        uid = wire.new_uid(rng)
        tz = timezone(timedelta(minutes=rng.choice(wire.OFFSETS)))
        self._machines[uid] = _Machine(tz, computer, alias, platform, org_uid)
        if platform == "windows":
            self._agents[uid] = {
                "instanceUid": uid,
                "agentPlatform": "Windows",
                "name": computer,
                "organizationUid": org_uid,
                "version": rng.choice(("6.1.2.134", "6.2.0.121", "6.3.0.177", "5.0.3.4708")),
                "status": rng.choices(("Active", "Inaccessible", "Error"), (90, 8, 2))[0],
            }
        self._fleet.add(
            uid,
            platform=platform,
            organization=org_uid,
            name=computer,
            alias=alias,
            tz=tz,
            created=self._now,
            first=first,
        )
        if self._extra.random() < 0.08:  # the agent also runs a job of its own, daily
            hour = self._extra.randrange(24)
            schedule = Schedule(datetime(2020, 1, 1, hour, tzinfo=tz).astimezone(UTC), timedelta(1))
            self._own_jobs[uid] = schedule
            if self._building:
                for days in range(7, 0, -1):
                    self._own_point(
                        uid, schedule.last_at_or_before(self._now) - timedelta(days - 1)
                    )
        return uid

    def _build_jobs(self, count: int, platform: str = "windows") -> None:
        rng = self._streams[platform]
        enums = _enums(platform)
        picks = {
            name: self._draw(name, values, count, rng, weights)
            for name, (values, weights) in enums.items()
        }
        events = self._draw_events(count) if platform == "windows" else [[]] * count
        legacy = set(rng.sample(range(count), round(count * 0.1)))
        future = set(rng.sample(range(count), max(1, round(count * 0.02)) if count >= 20 else 0))
        org_uids = list(self._orgs)
        index = 0
        while index < count:
            agent = self._add_agent(rng.choice(org_uids), platform)
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

    @staticmethod
    def _draw(
        name: str,
        values: tuple[str, ...],
        count: int,
        rng: random.Random,
        weights: tuple[int, ...],
    ) -> list[str]:
        """``count`` weighted draws; from 50 jobs on, every value appears at least once."""
        forced = list(values) if count >= 50 else []
        drawn = forced + rng.choices(values, weights, k=count - len(forced))
        rng.shuffle(drawn)
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
        store = self._stores[meta.platform]
        if first:
            self._stores[meta.platform] = {uid: job, **store}
        else:
            store[uid] = job

    def _create_job(
        self,
        created: datetime,
        *,
        first: bool = False,
        uid: str | None = None,
        platform: str = "windows",
    ) -> dict[str, Any]:
        rng, store = self._streams[platform], self._stores[platform]
        if platform == "windows":
            pool = list(self._agents)
        else:
            pool = [key for key, machine in self._machines.items() if machine.platform == platform]
        if not pool or rng.random() < 0.3:
            agent = self._add_agent(rng.choice(list(self._orgs)), platform)
        else:
            agent = rng.choice(pool)
        chosen = {
            name: rng.choices(values, weights)[0]
            for name, (values, weights) in _enums(platform).items()
        }
        chosen["status"] = "None"
        if uid is None and first and store:
            lowest = min(_uid_number(u) for u in store)
            uid = wire.new_uid(rng, rng.randrange(lowest // 2, lowest) if lowest > 1 else 0)
        job, meta = self._make_job(agent, chosen, [], created, legacy=False, future=False, uid=uid)
        self._store(job, meta, first=first)
        return job

    @staticmethod
    def _modified_by(alias: str, rng: random.Random) -> str | None:
        user = rng.choice(wire.USERS)
        template = rng.choice(wire.MODIFIERS)
        return wire.fill(template, ALIAS=alias.upper(), alias=alias, user=user)

    def _adopt(self, record: dict[str, Any], platform: str = "windows") -> _JobMeta:
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
            schedule=self._make_schedule(kind, tz, self._streams[platform]),
            platform=platform,
        )

    @staticmethod
    def _make_schedule(kind: str, tz: timezone, rng: random.Random) -> Schedule | None:
        hour = rng.choice((0, 1, 2, 3, 12, 18, 20, 21, 22, 23))
        anchor = datetime(2020, 1, 1, hour, rng.choice((0, 15, 30)), tzinfo=tz).astimezone(UTC)
        if kind == "Daily":
            return Schedule(anchor, timedelta(days=1))
        if kind == "Periodically":
            return Schedule(anchor, timedelta(hours=rng.choice((1, 2, 4, 6, 8, 12))))
        if kind == "Continuously":
            return Schedule(anchor, timedelta(hours=1), continuous=True)
        if kind == "Monthly":
            return Schedule(anchor.astimezone(tz), None, day=rng.randint(1, 28))
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
        machine, now = self._machines[agent_uid], self._now
        rng = self._streams[machine.platform]
        style = rng.choices(("spec", "lower", "camel"), (45, 45, 10))[0]
        meta = _JobMeta(
            tz=machine.tz,
            style=style,
            digits=rng.choice((0, 0, 6, 7, 7)),
            mod_digits=rng.choice((6, 7, 7)),
            retention=rng.choice((3, 7, 7, 14, 14, 30)),
            schedule=self._make_schedule(chosen["scheduleType"], machine.tz, rng),
            platform=machine.platform,
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
        if machine.platform == "windows":
            destination = {
                "Local": wire.fill(rng.choice(wire.LOCAL_TARGETS), **names),
                "Cloud": f"Cloud repository {self._provider_alias}-cc01 ({machine.alias})",
                "Unknown": None,
            }[chosen["targetType"]]
        else:
            destination = self._unix_destination(chosen["targetType"], machine, rng)
        modified = created - timedelta(days=rng.uniform(0, 400)) if backdate else created
        job: dict[str, Any] = {
            "instanceUid": uid or wire.new_uid(rng),
            "backupAgentUid": agent_uid,
            "organizationUid": machine.organization,
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
            "lastModifiedBy": self._modified_by(machine.alias, rng),
            "failureMessage": None,
            "backedUpSize": 0,
            "freeSpace": None,
        }
        if machine.platform != "windows":
            del job["scheduleEvents"]
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
        rng, now = self._streams[meta.platform], self._now

        def ts(dt: datetime) -> str:
            return wire.format_timestamp(dt, meta.tz, meta.digits)

        average = int(min(4 * 3600, max(20, rng.lognormvariate(6.3, 0.9))))
        duration = average * rng.uniform(0.6, 1.5) + rng.random()
        sessions = rng.randint(1, meta.retention)  # successful ones, each left a restore point
        for _ in range(sessions):
            self._grow(job, meta)
        job["avgDuration"] = average
        step = meta.schedule.spacing if meta.schedule is not None else timedelta(days=1)
        if status in ("Running", "Starting", "Stopping"):
            start = now - timedelta(seconds=duration * rng.uniform(0.05, 0.9))
            meta.running = (start, start + timedelta(seconds=duration))
            job["lastRun"] = ts(start)
            newest = start - step + timedelta(seconds=min(average, step.total_seconds() / 2))
            if rng.random() < 0.8:  # the previous session's end stays until this one ends
                newest = start - timedelta(hours=rng.uniform(1, 48))
                job["lastEndTime"] = ts(newest)
                job["lastDuration"] = int(average * rng.uniform(0.6, 1.5))
            self._backfill(job, meta, newest, step, sessions)
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
        if status in ("Success", "Warning"):  # the latest session made the newest point
            newest = start + timedelta(seconds=duration)
        else:
            newest = start - step + timedelta(seconds=min(average, step.total_seconds() / 2))
        self._backfill(job, meta, newest, step, sessions)

    def _backfill(
        self, job: dict[str, Any], meta: _JobMeta, newest: datetime, step: timedelta, count: int
    ) -> None:
        """The points of ``count`` sessions ``step`` apart, the last one ending at ``newest``."""
        self._points.backfill(self._chain(job, meta), newest, step, count)

    @staticmethod
    def _unix_destination(target: str, machine: _Machine, rng: random.Random) -> str | None:
        names = {"computer": machine.computer, "alias": machine.alias}
        if target == "BackupRepository":
            return f"Backup repository {machine.alias}-vbr01"
        if target == "CloudRepository":
            return f"Cloud repository cloudsafe-cc01 ({machine.alias})"
        paths = wire.UNIX_TARGETS[machine.platform].get(target)
        return wire.fill(rng.choice(paths), **names) if paths else None


def _enums(platform: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Each job enum's values and weights on ``platform``."""
    pairs = {name: (values, wire.WEIGHTS[name]) for name, values in wire.ENUMS.items()}
    if platform != "windows":
        pairs["targetType"] = (wire.UNIX_TARGET_TYPES, wire.UNIX_TARGET_WEIGHTS)
    return pairs
