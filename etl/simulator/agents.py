"""The computers of a simulated console: backup agents of every platform, the management agents
that report for them, and when each computer is reachable.

Drawn from a ``random.Random`` of its own (derived from the World's seed), so adding computers'
vendor fields never changes the jobs a seed gives. Records are built as the vendor's models
have them (``BackupAgent``, ``WindowsBackupAgent``/``LinuxBackupAgent``/``MacBackupAgent``,
``ManagementAgent`` with its ``ComputerInfo``), in the wire form the console sends.

A computer goes offline now and then (``outage_rate``: the chance per computer per day): its
management agent turns Inaccessible and stops sending heartbeats, its backup agent's status is
no longer known, and its jobs do not run until it is back (see :meth:`Fleet.online_spans`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from etl.simulator import wire

HEARTBEAT = 60.0  # seconds between two heartbeats of a reachable management agent
_RUNNING = frozenset({"running", "starting", "stopping"})


@dataclass(frozen=True)
class Details:
    """What the console knows of a computer and that does not change with time."""

    management_uid: str
    agent: dict[str, Any]  # vendor BackupAgent fields
    management: dict[str, Any]  # vendor ManagementAgent fields
    beat_phase: float  # seconds: when in each HEARTBEAT this computer's agent reports
    cbt: str | None


@dataclass
class Computer:
    """One protected computer: its backup agent and the management agent beside it.

    Its details are drawn on first use from a seed of its own: a World of a million jobs
    pays for them only if someone reads the agents.
    """

    uid: str  # the backup agent's instanceUid
    platform: str  # windows, linux or mac
    name: str
    alias: str
    organization: str
    tz: timezone
    created: datetime
    seed: int
    location: str
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)  # [off, back)
    stopped: bool = False  # the current outage is a stopped agent service, not a lost host
    _details: Details | None = None

    @property
    def details(self) -> Details:
        if self._details is None:
            self._details = _details(self)
        return self._details


@dataclass
class _Lonely:
    """A management agent with no backup agent: a backup server, a gateway, a retired PC."""

    record: dict[str, Any]
    connection: str
    beat_phase: float
    silent_since: datetime | None


class Fleet:
    """Every computer of the console, with its reachability over virtual time."""

    def __init__(self, seed: int, outage_rate: float = 0.0) -> None:
        if not 0 <= outage_rate <= 1:
            raise ValueError("outage_rate must be between 0 and 1")
        self._rng = random.Random(f"vspc-simulator/{seed}/agents")
        self._salt = f"vspc-simulator/{seed}/locations"
        self.outage_rate = outage_rate
        self.computers: dict[str, Computer] = {}
        self._lonely: dict[str, _Lonely] = {}

    # ------------------------------------------------------------- building
    def location(self, organization: str) -> str:
        """The uid of the organization's (only) location."""
        digest = hashlib.blake2b(f"{self._salt}/{organization}".encode(), digest_size=16)
        return wire.uid_text(int.from_bytes(digest.digest(), "big"))

    def add(
        self,
        uid: str,
        *,
        platform: str,
        organization: str,
        name: str,
        alias: str,
        tz: timezone,
        created: datetime,
        first: bool = False,
    ) -> Computer:
        """Register the computer of backup agent ``uid``, installed some time before ``created``."""
        computer = Computer(
            uid,
            platform,
            name,
            alias,
            organization,
            tz,
            created,
            self._rng.getrandbits(64),
            self.location(organization),
        )
        if first:
            self.computers = {uid: computer, **self.computers}
        else:
            self.computers[uid] = computer
        return computer

    def add_lonely(self, organization: str, alias: str, now: datetime) -> str:
        """A management agent without a backup agent (a site's backup server, say)."""
        rng = self._rng
        uid = wire.new_uid(rng)
        name = (
            f"{alias[:6].upper()}-{rng.choice(('VBR', 'GW', 'OLD-PC'))}{len(self._lonely) + 1:02d}"
        )
        installed = now - timedelta(days=rng.uniform(30, 900))
        os_info = rng.choice(wire.GUEST_OS["windows"][2:])
        record = _management_record(
            rng, uid, self.location(organization), organization, name, f"{alias}.local", os_info
        )
        record["discoveryTime"] = wire.format_timestamp(installed, UTC, 7)
        connection = rng.choices(("Online", "Inaccessible", "Rejected", "Unknown"), (4, 3, 2, 1))[0]
        silent = None
        if connection != "Online":
            silent = now - timedelta(hours=rng.uniform(2, 24 * 60))
        self._lonely[uid] = _Lonely(record, connection, rng.uniform(0, HEARTBEAT), silent)
        return uid

    def retire(self, uid: str) -> None:
        """Remove a computer (by backup or management agent uid) or a lone management agent."""
        self._lonely.pop(uid, None)
        for key, computer in list(self.computers.items()):
            if uid in (key, computer.details.management_uid):
                del self.computers[key]

    # ------------------------------------------------------------- time
    def advance(self, t0: datetime, t1: datetime) -> None:
        """Computers go offline (and come back) between ``t0`` and ``t1``."""
        days = (t1 - t0).total_seconds() / 86400
        p_outage = 1 - (1 - self.outage_rate) ** days if days else 0.0
        rng = self._rng
        for computer in self.computers.values():
            computer.outages = [(off, back) for off, back in computer.outages if back > t0]
            if not p_outage or rng.random() >= p_outage:
                continue
            start = max([t0, *(back for _, back in computer.outages)])
            if start >= t1:
                continue
            off = start + (t1 - start) * rng.random()
            hours = min(24 * 7, max(1.0, rng.lognormvariate(2.3, 1.0)))
            computer.outages.append((off, off + timedelta(hours=hours)))
            computer.stopped = rng.random() < 0.25

    def online_spans(
        self, uid: str, t0: datetime, t1: datetime
    ) -> list[tuple[datetime, datetime]] | None:
        """The parts of ``(t0, t1]`` when the computer is reachable; None: all of it."""
        computer = self.computers.get(uid)
        if computer is None:
            return None
        outages = [(off, back) for off, back in computer.outages if off < t1 and back > t0]
        if not outages:
            return None
        spans, cursor = [], t0
        for off, back in sorted(outages):
            if off > cursor:
                spans.append((cursor, off))
            cursor = max(cursor, back)
        if cursor < t1:
            spans.append((cursor, t1))
        return spans

    def offline_between(self, uid: str, start: datetime, end: datetime) -> datetime | None:
        """When the computer went offline during ``(start, end]``, if it did."""
        computer = self.computers.get(uid)
        if computer is None or not computer.outages:
            return None
        return min((off for off, _ in computer.outages if start < off <= end), default=None)

    def offline_since(self, uid: str, now: datetime) -> datetime | None:
        computer = self.computers.get(uid)
        if computer is None:
            return None
        return next((off for off, back in computer.outages if off <= now < back), None)

    # ------------------------------------------------------------- records
    def backup_agents(self, now: datetime, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``/infrastructure/backupAgents``: every computer, with its job counters."""
        counts: dict[str, list[int]] = {}
        for job in jobs:
            tally = counts.setdefault(str(job.get("backupAgentUid")), [0, 0, 0])
            status = str(job.get("status") or "").casefold()
            tally[0] += 1
            tally[1] += status in _RUNNING
            tally[2] += status == "success"
        rows = []
        for uid, computer in self.computers.items():
            total, running, success = counts.get(uid, (0, 0, 0))
            offline = self.offline_since(uid, now) is not None
            if offline and computer.stopped:
                status, management_status = "NotRunning", "Healthy"
            elif offline:
                status, management_status = "Unknown", "Inaccessible"
            else:
                status, management_status = "Active", "Healthy"
            rows.append(
                {
                    "instanceUid": uid,
                    "agentPlatform": wire.SYSTEM_TYPES[computer.platform],
                    "status": status,
                    "managementAgentStatus": management_status,
                    **computer.details.agent,
                    "totalJobsCount": total,
                    "runningJobsCount": running,
                    "successJobsCount": success,
                }
            )
        return rows

    def platform_agents(self, platform: str) -> list[dict[str, Any]]:
        """``/infrastructure/backupAgents/{platform}``: no name, as the vendor serves it."""
        rows = []
        for computer in self.computers.values():
            if computer.platform != platform:
                continue
            row: dict[str, Any] = {
                "instanceUid": computer.uid,
                "managementAgentUid": computer.details.management_uid,
            }
            if platform == "windows":
                row["cbtDriverStatus"] = computer.details.cbt
            rows.append(row)
        return rows

    def management_agents(self, now: datetime) -> list[dict[str, Any]]:
        """``/infrastructure/managementAgents``: one per computer, and the lone ones."""
        rows = []
        for computer in self.computers.values():
            since = self.offline_since(computer.uid, now)
            lost = since is not None and not computer.stopped
            rows.append(
                self._management_row(
                    computer.details.management,
                    computer.tz,
                    "Inaccessible" if lost else "Online",
                    _last_beat(
                        since if since is not None and lost else now, computer.details.beat_phase
                    ),
                )
            )
        for lonely in self._lonely.values():
            beat = _last_beat(lonely.silent_since or now, lonely.beat_phase)
            rows.append(self._management_row(lonely.record, UTC, lonely.connection, beat))
        return rows

    @staticmethod
    def _management_row(
        record: dict[str, Any], tz: timezone, connection: str, beat: datetime
    ) -> dict[str, Any]:
        status = {"Online": "Healthy", "Inaccessible": "Inaccessible"}.get(connection, "Error")
        if connection == "Online" and record["isRebootRequired"]:
            status = "Warning"
        row = {key: record[key] for key in wire.MANAGEMENT_AGENT_FIELDS if key in record}
        row["lastHeartbeatTime"] = wire.format_timestamp(beat, tz, 7)
        row["status"] = status
        row["connectionStatus"] = connection
        return {key: row[key] for key in wire.MANAGEMENT_AGENT_FIELDS}


def _last_beat(t: datetime, phase: float) -> datetime:
    """The last heartbeat at or before ``t`` of an agent reporting every HEARTBEAT seconds."""
    seconds = t.timestamp() - phase
    return datetime.fromtimestamp(seconds - seconds % HEARTBEAT + phase, UTC)


def _management_record(
    rng: random.Random,
    uid: str,
    location: str,
    organization: str,
    host: str,
    domain: str,
    os_info: tuple[str, str, str],
) -> dict[str, Any]:
    os_name, os_version, os_type = os_info
    mac = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
    return {
        "instanceUid": uid,
        "locationUid": location,
        "organizationUid": organization,
        "hostName": host,
        "friendlyName": host if rng.random() < 0.8 else f"{host} ({domain})",
        "version": rng.choice(("9.0.0.3134", "9.1.0.29112", "9.2.0.4133")),
        "discoveryTime": None,  # set by the caller
        "tag": None,
        "type": "Client",
        "computerInfo": {
            "uniqueUid": wire.new_uid(rng),
            "biosUuid": wire.new_uid(rng),
            "hostName": host,
            "fqdn": f"{host.lower()}.{domain}",
            "guestOs": os_name,
            "guestOsType": os_type,
            "guestOsVersion": os_version,
            "guestOsSku": 48 if os_type == "Workstation" else None,
            "platformType": rng.choice(("vSphere", "HyperV", "Other", "Azure", "Amazon")),
            "ipAddresses": [
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            ],
            "macAddresses": [mac],
            "applications": None,
        },
        "isRebootRequired": rng.random() < 0.05,
        "connectionAccount": None,
        "versionStatus": rng.choices(("UpToDate", "OutOfDate", "PatchAvailable"), (80, 12, 8))[0],
        "role": "Client",
    }


def _details(computer: Computer) -> Details:
    rng = random.Random(computer.seed)
    platform, tz = computer.platform, computer.tz
    installed = computer.created - timedelta(days=rng.uniform(1, 900))
    management_uid = wire.new_uid(rng)
    os_info = rng.choice(wire.GUEST_OS[platform])
    server = os_info[2] == "Server" or (platform == "linux" and rng.random() < 0.7)
    agent = {
        "managementAgentUid": management_uid,
        "siteUid": None,
        "organizationUid": computer.organization,
        "name": computer.name,
        "operationMode": "Server" if server else rng.choice(("Workstation", "UnLicensed")),
        "platform": rng.choices(("Physical", "Virtual", "Cloud", "Unknown"), (45, 40, 12, 3))[0],
        "version": rng.choice(wire.AGENT_VERSIONS[platform]),
        "versionStatus": rng.choices(("UpToDate", "OutOfDate", "Unknown"), (75, 22, 3))[0],
        "activationTime": wire.format_timestamp(installed, tz, 7),
        "managementMode": rng.choices(("ManagedByConsole", "ManagedByVBR"), (92, 8))[0],
        "installationType": rng.choices(("Full", "Restricted", "Unknown"), (90, 8, 2))[0],
        "guiMode": rng.choices(("Full", "ReadOnly", "Unknown"), (70, 28, 2))[0],
    }
    management = _management_record(
        rng,
        management_uid,
        computer.location,
        computer.organization,
        computer.name,
        f"{computer.alias}.local",
        os_info,
    )
    management["discoveryTime"] = wire.format_timestamp(installed, UTC, 7)
    cbt = None
    if platform == "windows":
        cbt = rng.choices(("Installed", "NotInstalled", "Error"), (80, 17, 3))[0]
    return Details(management_uid, agent, management, rng.uniform(0, HEARTBEAT), cbt)
