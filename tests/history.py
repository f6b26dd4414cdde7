"""Hand-built snapshot histories whose SLA answers are counted by hand in the tests.

Day 0 is midnight UTC twenty days ago; ``at(d, h, m)`` is an instant on day d. A history is
a list of snapshot versions, written straight into ``vspc.backup_agent_job_snapshots``; then
``etl.load.reporting.rebuild`` derives the sessions and the days, as a sync would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text

NOW = datetime.now(UTC)
DAY0 = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=20)

ORG_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
ORG_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")
ORG_C = uuid.UUID("cccccccc-0000-4000-8000-000000000003")
AGENT = uuid.UUID("00000000-0000-4000-8000-00000000a9e7")


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant on day ``day`` (UTC)."""
    return DAY0 + timedelta(days=day, hours=hour, minutes=minute)


def day(n: int) -> date:
    """The calendar date of day ``n`` (UTC)."""
    return (DAY0 + timedelta(days=n)).date()


def job(n: int) -> uuid.UUID:
    return uuid.UUID(f"10000000-0000-4000-8000-{n:012d}")


@dataclass(frozen=True)
class Seen:
    """What one sync saw of a job, from ``since`` until the next observation."""

    since: datetime
    status: str
    last_run: datetime | None = None
    last_end: datetime | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Version:
    uid: uuid.UUID
    org: uuid.UUID
    seen: Seen
    valid_to: datetime | None
    deleted: bool = False
    name: str = "job"


def versions(
    uid: uuid.UUID,
    org: uuid.UUID,
    *seen: Seen,
    deleted_at: datetime | None = None,
    name: str = "job",
) -> list[Version]:
    """Consecutive versions of one job; ``deleted_at`` adds the tombstone."""
    out: list[Version] = []
    for i, s in enumerate(seen):
        following = seen[i + 1].since if i + 1 < len(seen) else deleted_at
        out.append(Version(uid, org, s, following, name=name))
    if deleted_at is not None:
        last = seen[-1]
        out.append(Version(uid, org, replace(last, since=deleted_at), None, deleted=True))
    return out


def daily(
    uid: uuid.UUID, org: uuid.UUID, outcomes: list[str], *, start: int = 1, minutes: int = 60
) -> list[Version]:
    """A job whose session of day i starts at ``start`` o'clock and is seen at 06:00."""
    seen = [
        Seen(at(i, 6), outcome, at(i, start), at(i, start) + timedelta(minutes=minutes))
        for i, outcome in enumerate(outcomes)
    ]
    return versions(uid, org, *seen)


def insert(conn: Connection, rows: list[Version]) -> None:
    """Write the versions as a sync would have (run_id 1 for all): Windows jobs, as a
    warehouse of any revision holds them (``system_type`` from revision 0008 on)."""
    platform = conn.execute(
        text(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'vspc' "
            "AND table_name = 'backup_agent_job_snapshots' AND column_name = 'system_type'"
        )
    ).scalar_one()
    column, value = (", system_type", ", 'Windows'") if platform else ("", "")
    conn.execute(
        text(
            "INSERT INTO vspc.backup_agent_job_snapshots (instance_uid, source, backup_agent_uid, "
            "organization_uid, name, status, last_run, last_end_time, is_enabled, raw, "
            f"valid_from, valid_to, is_deleted, run_id{column}) VALUES (:uid, 'hand', :agent, "
            ":org, :name, :status, :last_run, :last_end, :enabled, CAST(:raw AS jsonb), :since, "
            f":valid_to, :deleted, 1{value})"
        ),
        [
            {
                "uid": v.uid,
                "agent": AGENT,
                "org": v.org,
                "name": v.name,
                "status": v.seen.status,
                "last_run": v.seen.last_run,
                "last_end": v.seen.last_end,
                "enabled": v.seen.enabled,
                "raw": json.dumps({"instanceUid": str(v.uid)}),
                "since": v.seen.since,
                "valid_to": v.valid_to,
                "deleted": v.deleted,
            }
            for v in rows
        ],
    )


def sla_history() -> list[Version]:
    """Organizations A (two jobs), B (one deleted, one disabled) and C (one late session).

    A/J2: sessions at 01:00 for one hour, days 0-4: Success, Failed x3, Success (day 4 ends
          03:30). A/J3: never ran when first seen; sessions at 22:00-22:30 on days 0-3:
          Success, Success, Warning, Failed, each seen at 06:00 the next day.
    B/K1: sessions at 01:00 on days 0 and 1 (Success), deleted at day 2 06:00.
    B/K2: disabled from the start, never ran.
    C/M1: one session, day 0 23:30-23:50 UTC (Success), seen at day 1 06:00.
    """
    j2 = daily(job(2), ORG_A, ["Success", "Failed", "Failed", "Failed", "Success"])
    last = j2[-1]
    j2[-1] = replace(last, seen=replace(last.seen, last_end=at(4, 3, 30)))
    j3 = versions(
        job(3),
        ORG_A,
        Seen(at(0, 6), "None"),
        *(
            Seen(at(i + 1, 6), outcome, at(i, 22), at(i, 22, 30))
            for i, outcome in enumerate(["Success", "Success", "Warning", "Failed"])
        ),
    )
    k1 = versions(
        job(11),
        ORG_B,
        Seen(at(0, 6), "Success", at(0, 1), at(0, 2)),
        Seen(at(1, 6), "Success", at(1, 1), at(1, 2)),
        deleted_at=at(2, 6),
    )
    k2 = versions(job(12), ORG_B, Seen(at(0, 6), "None", enabled=False))
    m1 = versions(
        job(21),
        ORG_C,
        Seen(at(0, 6), "None"),
        Seen(at(1, 6), "Success", at(0, 23, 30), at(0, 23, 50)),
    )
    return [*j2, *j3, *k1, *k2, *m1]
