"""What a report covers: a window of calendar days and the filters ``--source``,
``--organization``, ``--platform``.

A filter is a condition per kind of relation it is applied to: relations with one row per job
(``job_runs``, ``job_sla_current``, ``job_sla_at``) carry ``source``, ``organization_uid`` and
``system_type``; ``sla_daily`` has one row per organization and day, so a source selects the
organizations whose jobs that console holds. A platform cannot select rows of ``sla_daily``
(an organization's day counts every platform together): ``--platform`` applies to the per-job
and per-computer reports (``--by job``, ``--by computer``) only, and asking it of another says
so (:class:`ConfigError`). ``computer_sla_current`` has one row per computer with the same
three columns: it is filtered as the relations of jobs are.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from etl.errors import ConfigError

# alias placeholder {a}; parameters named after the filter
_CONDITIONS: dict[str, dict[str, str]] = {
    "source": {
        "jobs": "{a}.source = :source",
        "organizations": "{a}.organization_uid IN (SELECT j.organization_uid "
        "FROM vspc.backup_agent_jobs j WHERE j.source = :source)",
    },
    "organizations": {
        "jobs": "{a}.organization_uid = ANY(:organizations)",
        "organizations": "{a}.organization_uid = ANY(:organizations)",
    },
    "system_type": {"jobs": "{a}.system_type = :system_type"},
}
PLATFORMS = {"windows": "Windows", "linux": "Linux", "mac": "Mac"}
PLATFORM_ONLY = (
    "--platform applies to the per-job and per-computer reports only (--by job or computer, "
    "table, csv or json, no --chart): the daily and per-organization numbers count every "
    "platform together"
)
"""``--platform`` values and the ``system_type`` each selects."""


@dataclass(frozen=True)
class Filters:
    """Only these rows: a console's name, organizations' uids, a platform's ``system_type``
    (None: no filter)."""

    source: str | None = None
    organizations: tuple[UUID, ...] | None = None
    system_type: str | None = None

    def where(self, alias: str, kind: str) -> tuple[str, dict[str, Any]]:
        """``AND ...`` conditions on ``alias`` (a relation of ``kind`` jobs or organizations)."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for name, conditions in _CONDITIONS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if kind not in conditions:
                raise ConfigError(PLATFORM_ONLY)
            clauses.append(conditions[kind].format(a=alias))
            params[name] = list(value) if isinstance(value, tuple) else value
        return "".join(f" AND {c}" for c in clauses), params

    @classmethod
    def given(
        cls,
        conn: Connection,
        *,
        source: str | None = None,
        organization: str | None = None,
        platform: str | None = None,
    ) -> Filters:
        """The filters of the command line: ``organization`` resolved to its uid, ``platform``
        (windows, linux or mac) to its ``system_type``."""
        system_type = None if platform is None else PLATFORMS[platform.lower()]
        if organization is None:
            return cls(source=source, system_type=system_type)
        return cls(
            source=source,
            organizations=(resolve_organization(conn, organization, source=source),),
            system_type=system_type,
        )


NO_FILTERS = Filters()


def scope(source: str | None, organization: str | None, platform: str | None = None) -> str:
    """The filters in the user's words, for a message: `` for organization 'x'`` or empty."""
    parts = [] if platform is None else [f"{PLATFORMS[platform.lower()]} jobs"]
    if organization is not None:
        parts.append(f"organization {organization!r}")
    if source is not None:
        parts.append(f"source {source!r}")
    return f" for {' of '.join(parts)}" if parts else ""


@dataclass(frozen=True)
class Window:
    """Calendar days ``first`` through ``last``, both included."""

    first: date
    last: date

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


def last_days(today: date, days: int) -> Window:
    """The last ``days`` calendar days, today included."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return Window(today - timedelta(days=days - 1), today)


def month_window(month: str) -> Window:
    """``YYYY-MM`` as its calendar days; ConfigError naming the flag otherwise."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
    if match is None or not 1 <= int(match[2]) <= 12:
        raise ConfigError(f"--month {month!r}: give a month as YYYY-MM, e.g. 2026-11")
    first = date(int(match[1]), int(match[2]), 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Window(first, following - timedelta(days=1))


def current_month(now: datetime | None = None) -> str:
    """This month in UTC as ``YYYY-MM``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def report_today(conn: Connection) -> tuple[date, str]:
    """Today in the report time zone, and that zone's name."""
    row = conn.execute(
        text(
            "SELECT (now() AT TIME ZONE z.tz)::date, z.tz FROM (SELECT coalesce("
            "(SELECT time_zone FROM vspc.report_settings LIMIT 1), 'UTC') AS tz) z"
        )
    ).one()
    return row[0], row[1]


_UID_PREFIX = re.compile(r"[0-9a-fA-F]{8}[0-9a-fA-F-]*")


def resolve_organization(conn: Connection, value: str, *, source: str | None = None) -> UUID:
    """The organization ``--organization`` names: its name (any case), uid, or a uid's start.

    ConfigError, naming the flag and what to give instead, if none or several match.
    """
    known = conn.execute(
        text(
            "SELECT o.uid, n.name FROM (SELECT DISTINCT organization_uid AS uid "
            "FROM vspc.backup_agent_jobs WHERE organization_uid IS NOT NULL"
            " AND (CAST(:source AS text) IS NULL OR source = :source) "
            "UNION SELECT instance_uid FROM vspc.organizations"
            " WHERE CAST(:source AS text) IS NULL OR source = :source) o "
            "LEFT JOIN LATERAL (SELECT name FROM vspc.organizations x "
            "WHERE x.instance_uid = o.uid ORDER BY x.name LIMIT 1) n ON true"
        ),
        {"source": source},
    ).all()
    names = {uid: name for uid, name in known}
    wanted = value.strip()
    matches = [uid for uid, name in names.items() if name and name.casefold() == wanted.casefold()]
    if not matches and _UID_PREFIX.fullmatch(wanted):
        matches = [uid for uid in names if str(uid).startswith(wanted.lower())]
    if len(matches) == 1:
        return UUID(str(matches[0]))
    if matches:
        uids = ", ".join(sorted(str(m) for m in matches))
        raise ConfigError(
            f"--organization {value!r} matches {len(matches)} organizations ({uids}): give one uid"
        )
    close = difflib.get_close_matches(wanted, [n for n in names.values() if n], n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    where = f" of source {source!r}" if source is not None else ""
    raise ConfigError(
        f"--organization {value!r}: no organization{where} has that name or uid{hint} "
        "(`vspc-etl report` lists them)"
    )
