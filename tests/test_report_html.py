"""The month's figures and the customer SLA report (``report --format html``), counted by hand.

October 2026 (UTC), RPO 24 h. Acme Corp:
  J1 on PC-ACCOUNTING: a session every day 01:00-02:00, Success but Failed on the 10th and
     11th ("Disk full"), and a second session on the 15th, 13:00, Failed ("VSS error").
  J2 on an agent without a name: a session every day 22:00-22:30, seen the next morning,
     Success, Warning on the 5th ("Low free space"), Failed from the 20th on ("Network path
     not found").
  J3 on PC-ACCOUNTING: disabled all month (never protected).
  J5 on an agent never listed: 01:00-01:30 Success on the 1st..14th, deleted the 15th 06:00.
Globex: J4 on GLOBEX-SRV, 01:00-01:20 Success every day.

Acme: protected job-days J1 31 + J2 31 + J5 14 = 76; met J1 29 (not the 10th, 11th) + J2 19
(not the 20th..31st) + J5 14 = 62: RPO compliance 81.6 %. Sessions 32 + 31 + 14 = 77, good
29 + (18 + 1) + 14 = 62, failed 3 + 12 = 15: success rate 80.5 %. At the end of the month two
jobs (J1, J2) on two computers are protected.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from etl.cli import main
from etl.load.reporting import rebuild
from etl.report import missed, month_window, monthly_reports, render_html
from etl.report.filters import NO_FILTERS, Filters
from etl.report.html import file_name
from etl.report.missed import MissedRow, missed_rows
from etl.report.monthly import MonthlyReport
from tests.test_report import current_jobs

ACME = uuid.UUID("a0000000-0000-4000-8000-0000000000a1")
GLOBEX = uuid.UUID("b0000000-0000-4000-8000-0000000000b2")
PC1 = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
PC2 = uuid.UUID("c2c2c2c2-0000-4000-8000-0000000000c2")  # listed without a name
PC3 = uuid.UUID("00000000-0000-4000-8000-0000000000c3")
PC4 = uuid.UUID("00000000-0000-4000-8000-0000000000c4")  # never listed
J1, J2, J3, J4, J5 = (uuid.UUID(f"20000000-0000-4000-8000-00000000000{n}") for n in range(1, 6))


def t(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant of October 2026 (UTC); day 32 is 1 November."""
    return datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour, minutes=minute)


def on(day: int) -> date:
    """A day of October 2026."""
    return date(2026, 10, day)


@dataclass(frozen=True)
class Seen:
    at: datetime
    status: str
    run: tuple[datetime, datetime] | None = None
    message: str | None = None
    enabled: bool = True


def job_rows(
    uid: uuid.UUID,
    org: uuid.UUID,
    agent: uuid.UUID,
    name: str,
    seen: list[Seen],
    deleted_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The snapshot versions of one job, each valid until the next (or the deletion)."""
    rows = []
    for i, s in enumerate(seen):
        until = seen[i + 1].at if i + 1 < len(seen) else deleted_at
        rows.append(_row(uid, org, agent, name, s, s.at, until, deleted=False))
    if deleted_at is not None:
        rows.append(_row(uid, org, agent, name, seen[-1], deleted_at, None, deleted=True))
    return rows


def _row(
    uid: uuid.UUID,
    org: uuid.UUID,
    agent: uuid.UUID,
    name: str,
    s: Seen,
    since: datetime,
    until: datetime | None,
    *,
    deleted: bool,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "org": org,
        "agent": agent,
        "name": name,
        "status": s.status,
        "last_run": s.run[0] if s.run else None,
        "last_end": s.run[1] if s.run else None,
        "message": s.message,
        "enabled": s.enabled,
        "raw": json.dumps({"instanceUid": str(uid)}),
        "since": since,
        "until": until,
        "deleted": deleted,
    }


def october() -> list[dict[str, Any]]:
    j1 = []
    for d in range(1, 32):
        failed = d in (10, 11)
        j1.append(
            Seen(
                t(d, 6),
                "Failed" if failed else "Success",
                (t(d, 1), t(d, 2)),
                "Disk full" if failed else None,
            )
        )
        if d == 15:
            j1.append(Seen(t(15, 14), "Failed", (t(15, 13), t(15, 13, 20)), "VSS error"))
    j2 = [Seen(t(1, 6), "None")]
    for d in range(1, 32):
        status, message = "Success", None
        if d == 5:
            status, message = "Warning", "Low free space"
        elif d >= 20:
            status, message = "Failed", "Network path not found"
        j2.append(Seen(t(d + 1, 6), status, (t(d, 22), t(d, 22, 30)), message))
    j5 = [Seen(t(d, 6), "Success", (t(d, 1), t(d, 1, 30))) for d in range(1, 15)]
    j4 = [Seen(t(d, 6), "Success", (t(d, 1), t(d, 1, 20))) for d in range(1, 32)]
    return [
        *job_rows(J1, ACME, PC1, "Daily C:", j1),
        *job_rows(J2, ACME, PC2, "Documents", j2),
        *job_rows(J3, ACME, PC1, "Old job", [Seen(t(1, 6), "None", enabled=False)]),
        *job_rows(J5, ACME, PC4, "Laptop", j5, deleted_at=t(15, 6)),
        *job_rows(J4, GLOBEX, PC3, "Server", j4),
    ]


def load(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO vspc.backup_agent_job_snapshots (instance_uid, source, backup_agent_uid, "
            "organization_uid, name, status, last_run, last_end_time, failure_message, "
            "is_enabled, raw, valid_from, valid_to, is_deleted, run_id, system_type) VALUES "
            "(:uid, 'hand', :agent, :org, :name, :status, :last_run, :last_end, :message, "
            ":enabled, CAST(:raw AS jsonb), :since, :until, :deleted, 1, 'Windows')"
        ),
        october(),
    )
    conn.execute(
        text(
            "INSERT INTO vspc.organizations VALUES (:a, 'hand', 'Acme Corp', 'acme', 'Company', "
            "now(), now()), (:g, 'hand', 'Globex', 'globex', 'Company', now(), now())"
        ),
        {"a": ACME, "g": GLOBEX},
    )
    conn.execute(
        text(
            "INSERT INTO vspc.backup_agents (instance_uid, source, computer_name, "
            "organization_uid, first_seen_at, updated_at) VALUES "
            "(:pc1, 'hand', 'PC-ACCOUNTING', :a, now(), now()), "
            "(:pc2, 'hand', NULL, :a, now(), now()), "
            "(:pc3, 'hand', 'GLOBEX-SRV', :g, now(), now())"
        ),
        {"pc1": PC1, "pc2": PC2, "pc3": PC3, "a": ACME, "g": GLOBEX},
    )
    current_jobs(conn)
    rebuild(conn)


@pytest.fixture
def month(fresh_db: Engine, database_url: URL) -> dict[str, str]:
    """October 2026 loaded; the CLI's environment."""
    with fresh_db.begin() as conn:
        load(conn)
    return {"DATABASE_URL": database_url.render_as_string(hide_password=False)}


@pytest.fixture
def acme(month: dict[str, str], fresh_db: Engine) -> MonthlyReport:
    with fresh_db.connect() as conn:
        reports = monthly_reports(conn, month_window("2026-10"))
    return reports[0]


def test_month_figures_are_the_hand_count(month: dict[str, str], fresh_db: Engine) -> None:
    with fresh_db.connect() as conn:
        acme, globex = monthly_reports(conn, month_window("2026-10"))
    assert (acme.organization_name, globex.organization_name) == ("Acme Corp", "Globex")
    assert acme.complete and acme.as_of == t(32)
    assert (acme.protected_job_days, acme.met_job_days) == (76, 62)
    assert round(acme.rpo_compliance or 0, 4) == 0.8158
    assert (acme.runs, acme.good_runs, acme.failed_runs) == (77, 62, 15)
    assert round(acme.success_rate or 0, 4) == 0.8052
    assert (acme.jobs_protected, acme.computers_protected) == (2, 2)
    assert acme.rpo_hours == [24]
    days = {d.day: d for d in acme.days}
    assert len(days) == 31
    assert [
        (d.jobs_protected, d.jobs_meeting_rpo, d.runs, d.good_runs)
        for d in (days[on(10)], days[on(15)], days[on(20)])
    ] == [(3, 2, 3, 2), (2, 2, 3, 2), (2, 1, 2, 1)]

    documents, daily = acme.missed_jobs
    assert (documents.instance_uid, documents.computer_name, documents.rpo_hours) == (J2, None, 24)
    assert documents.days == [on(d) for d in range(20, 32)]
    assert documents.last_success_at == t(19, 22, 30)
    assert [(m.status, m.text, m.sessions, m.last_at) for m in documents.messages] == [
        ("Failed", "Network path not found", 12, t(31, 22)),
        ("Warning", "Low free space", 1, t(5, 22)),
    ]
    assert (daily.instance_uid, daily.computer_name, daily.days) == (
        J1,
        "PC-ACCOUNTING",
        [on(10), on(11)],
    )
    assert daily.last_success_at == t(9, 2)
    assert [(m.text, m.sessions) for m in daily.messages] == [("VSS error", 1), ("Disk full", 2)]
    assert [
        (c.backup_agent_uid, c.computer_name, c.jobs, c.days) for c in acme.missed_computers
    ] == [
        (PC2, None, 1, 12),
        (PC1, "PC-ACCOUNTING", 1, 2),
    ]
    # the days each job missed add up, day by day, to what sla_daily says was missed
    assert sum(len(j.days) for j in acme.missed_jobs) == 76 - 62
    assert Counter(d for j in acme.missed_jobs for d in j.days) == {
        d.day: d.jobs_protected - d.jobs_meeting_rpo
        for d in acme.days
        if d.jobs_protected > d.jobs_meeting_rpo
    }

    assert (globex.protected_job_days, globex.met_job_days, globex.runs, globex.good_runs) == (
        31,
        31,
        31,
        31,
    )
    assert (globex.jobs_protected, globex.computers_protected, globex.missed_jobs) == (1, 1, [])


def test_month_is_utc_whatever_the_report_time_zone(acme: MonthlyReport, fresh_db: Engine) -> None:
    with fresh_db.begin() as conn:
        conn.execute(text("UPDATE vspc.report_settings SET time_zone = 'Pacific/Auckland'"))
    with fresh_db.connect() as conn:
        local = conn.execute(
            text(
                "SELECT sum(runs) FROM vspc.sla_daily WHERE organization_uid = :a AND day "
                "BETWEEN '2026-10-01' AND '2026-10-31'"
            ),
            {"a": ACME},
        ).scalar_one()
        again = monthly_reports(conn, month_window("2026-10"))[0]
    assert local != 77  # Auckland's October starts eleven hours before UTC's
    assert [
        (d.day, d.jobs_protected, d.jobs_meeting_rpo, d.runs, d.good_runs) for d in again.days
    ] == [(d.day, d.jobs_protected, d.jobs_meeting_rpo, d.runs, d.good_runs) for d in acme.days]
    assert [(j.instance_uid, j.days) for j in again.missed_jobs] == [
        (j.instance_uid, j.days) for j in acme.missed_jobs
    ]


# -- the jobs that missed, all days at once ---------------------------------------------


def sla_daily_misses(conn: Connection) -> dict[tuple[uuid.UUID | None, date], int]:
    """How many jobs missed, by organization and day of October, as sla_daily counts them."""
    return {
        (report.organization_uid, d.day): d.jobs_protected - d.jobs_meeting_rpo
        for report in monthly_reports(conn, month_window("2026-10"))
        for d in report.days
    }


def definition_and_fast(
    conn: Connection, days: list[date], filters: Filters = NO_FILTERS
) -> tuple[list[MissedRow], list[MissedRow]]:
    expected = sla_daily_misses(conn)
    defined = missed_rows(conn, days, expected, filters, fast=False)
    return defined, missed_rows(conn, days, expected, filters)


def by_day(rows: list[MissedRow]) -> list[tuple[date, set[MissedRow]]]:
    days = sorted({r.day for r in rows})
    return [(d, {r for r in rows if r.day == d}) for d in days]


@pytest.fixture
def asked_of_the_definition(monkeypatch: pytest.MonkeyPatch) -> list[list[date]]:
    """The days ``job_sla_at`` itself is asked, call by call."""
    asked: list[list[date]] = []
    defined = missed._defined

    def spy(conn: Connection, days: list[date], *args: Any) -> list[MissedRow]:
        asked.append(list(days))
        return defined(conn, days, *args)

    monkeypatch.setattr(missed, "_defined", spy)
    return asked


# RPO policies the fast path is checked under: the default, another default, one
# organization's own, and both at once.
POLICIES = pytest.mark.parametrize(
    "policy",
    [[], [(None, 48)], [(ACME, 12)], [(None, 6), (GLOBEX, 30)]],
    ids=["24h", "48h", "acme-12h", "6h-globex-30h"],
)


def set_policy(engine: Engine, policy: list[tuple[uuid.UUID | None, int]]) -> None:
    """``sla_policy`` rows: (organization or None for the default, RPO hours)."""
    if policy:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO vspc.sla_policy VALUES (:org, :hours) ON CONFLICT "
                    "(organization_uid) DO UPDATE SET rpo_hours = excluded.rpo_hours"
                ),
                [{"org": org, "hours": hours} for org, hours in policy],
            )


@POLICIES
def test_the_jobs_that_missed_are_job_sla_at_s_day_by_day(
    month: dict[str, str],
    fresh_db: Engine,
    policy: list[tuple[uuid.UUID | None, int]],
    asked_of_the_definition: list[list[date]],
) -> None:
    set_policy(fresh_db, policy)
    october_days = [on(d) for d in range(1, 32)]
    with fresh_db.connect() as conn:
        acme_only = Filters(organizations=(ACME,))
        for days, filters in [
            (october_days, NO_FILTERS),
            (october_days, acme_only),
            # from the 20th: J2's last success (the 19th) is older than any RPO then
            (october_days[19:], NO_FILTERS),
        ]:
            defined, fast = definition_and_fast(conn, days, filters)
            assert by_day(fast) == by_day(defined)
            assert fast  # every policy leaves days with a job that missed
            if filters is acme_only:
                assert {r.organization_uid for r in fast} == {ACME}
    # one call per set of days for the definition itself, none for the fast answers
    assert asked_of_the_definition == [october_days, october_days, october_days[19:]]


# -- restore points ----------------------------------------------------------------------
# Acme's October again, with the console's restore points:
#   J1: a point at 10th 20:00 (a session no reading saw): J1 meets its RPO on the 10th.
#   J2: a point at 20th 23:00, merged away the 21st 12:00: it counts for the 20th only; a
#       point at 25th 23:00, merged away the 30th 12:00: it counts for the 25th (and the 26th
#       under 48 h) and, too old, stays J2's newest point until it is gone.
#   PC2 (J2's computer): a point without a job at 28th 23:00: it is no job's evidence.
POINTS = [
    (J1, PC1, t(10, 20), None),
    (J2, PC2, t(20, 23), t(21, 12)),
    (J2, PC2, t(25, 23), t(30, 12)),
    (None, PC2, t(28, 23), None),
]


def add_points(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO vspc.restore_points (instance_uid, source, backup_agent_uid, job_uid, "
            "creation_date, raw, first_seen_at, gone_at) VALUES "
            "(:uid, 'hand', :agent, :job, :created, '{}', :created, :gone)"
        ),
        [
            {"uid": uuid.uuid4(), "job": job, "agent": agent, "created": created, "gone": gone}
            for job, agent, created, gone in POINTS
        ],
    )


@pytest.fixture
def month_with_points(month: dict[str, str], fresh_db: Engine) -> dict[str, str]:
    with fresh_db.begin() as conn:
        add_points(conn)
    return month


def test_restore_points_count_in_the_month(
    month_with_points: dict[str, str], fresh_db: Engine, asked_of_the_definition: list[list[date]]
) -> None:
    with fresh_db.connect() as conn:
        acme = monthly_reports(conn, month_window("2026-10"))[0]
    # 62 job-days met on sessions, and J1's 10th, J2's 20th and 25th on points
    assert (acme.protected_job_days, acme.met_job_days) == (76, 65)
    documents, daily = acme.missed_jobs
    assert documents.days == [on(d) for d in range(21, 32) if d != 25]
    # the last day it missed, the 31st: its points were gone by then
    assert (documents.last_success_at, documents.last_restore_point_at) == (t(19, 22, 30), None)
    assert (documents.last_backup_at, documents.last_backup_is_point) == (t(19, 22, 30), False)
    assert (daily.instance_uid, daily.days) == (J1, [on(11)])
    assert (daily.last_success_at, daily.last_restore_point_at) == (t(9, 2), t(10, 20))
    assert (daily.last_backup_at, daily.last_backup_is_point) == (t(10, 20), True)
    assert asked_of_the_definition == []  # every day answered by the fast query
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render_html(acme)))
    assert "PC-ACCOUNTING Daily C: 24 h 1 2026-10-10 20:00 restore point" in words
    assert "Restore points count" in words


@POLICIES
def test_the_jobs_that_missed_with_restore_points_are_job_sla_at_s(
    month_with_points: dict[str, str],
    fresh_db: Engine,
    policy: list[tuple[uuid.UUID | None, int]],
    asked_of_the_definition: list[list[date]],
) -> None:
    set_policy(fresh_db, policy)
    october_days = [on(d) for d in range(1, 32)]
    with fresh_db.connect() as conn:
        for days in (october_days, october_days[20:]):
            defined, fast = definition_and_fast(conn, days)
            assert by_day(fast) == by_day(defined)
            missed_on = {(r.instance_uid, r.day): r for r in fast}
            # saved by a point: J1 the 10th, J2 the 25th; not by the computer's point
            # without a job: J2 the 28th
            assert (J1, on(10)) not in missed_on and (J2, on(25)) not in missed_on
            assert missed_on[J2, on(28)].last_restore_point_at == t(25, 23)
            assert missed_on[J2, on(30)].last_restore_point_at is None  # merged away
    assert asked_of_the_definition == [october_days, october_days[20:]]  # no day fell back


def test_a_day_the_counts_disagree_on_is_asked_of_job_sla_at(
    month: dict[str, str], fresh_db: Engine, asked_of_the_definition: list[list[date]]
) -> None:
    october_days = [on(d) for d in range(1, 32)]
    with fresh_db.connect() as conn:
        expected = sla_daily_misses(conn)
        assert expected[ACME, on(10)] == 1  # J1
        # as if sla_daily said J1 met its RPO on the 10th (a restore point, say)
        expected[ACME, on(10)] = 0
        fast = missed_rows(conn, october_days, expected)
        defined = missed_rows(conn, october_days, expected, fast=False)
    assert asked_of_the_definition == [[on(10)], october_days]
    assert by_day(fast) == by_day(defined)
    assert {(r.instance_uid, r.last_success_at) for r in fast if r.day == on(10)} == {(J1, t(9, 2))}


def test_a_running_month_is_read_up_to_now(month: dict[str, str], fresh_db: Engine) -> None:
    today = datetime.now(UTC)
    with fresh_db.connect() as conn:
        reports = monthly_reports(conn, month_window(today.strftime("%Y-%m")))
    acme = next(r for r in reports if r.organization_uid == ACME)
    assert not acme.complete
    assert acme.days[-1].day == today.date()
    # nothing has run since October: J1 and J2 protected every day, meeting the RPO on none
    assert {(d.jobs_protected, d.jobs_meeting_rpo, d.runs) for d in acme.days} == {(2, 0, 0)}
    assert [(j.instance_uid, len(j.days)) for j in acme.missed_jobs] == [
        (J2, today.day),  # no computer name sorts first
        (J1, today.day),
    ]


def test_cli_writes_the_report_of_one_organization(
    runner: CliRunner, month: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the page needs no matplotlib
    out = tmp_path / "reports" / "acme.html"
    args = ["report", "--format", "html", "--organization", "acme corp", "--month", "2026-10"]
    result = runner.invoke(main, [*args, "--out", str(out)], env=month)
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("", f"SLA report for 2026-10 written to {out}\n")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for expected in (
        "Backup SLA report: Acme Corp",
        "October 2026",
        '<div class="value poor" id="rpo-compliance">81.6%</div>',
        '<div class="value poor" id="success-rate">80.5%</div>',
        '<div class="value" id="computers">2</div>',
        '<div class="value" id="jobs">2</div>',
        "62 of 76 protected job-days met the RPO",
        "62 of 77 backup sessions succeeded",
        "Network path not found",
        "Disk full",
        "PC-ACCOUNTING",
        "c2c2c2c2…",  # the agent without a name
        "How the numbers are defined",
    ):
        assert expected in page, expected
    assert "Globex" not in page
    assert_self_contained(page)
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it


def assert_self_contained(page: str) -> None:
    """No reference to anything outside the file: no URL in src, href, url() or @import."""
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)|url\(([^)]*)\)|@import""", page)
    assert references == []
    assert not re.search(r"https?://", page.replace("http://www.w3.org/2000/svg", ""))


def test_all_organizations_write_one_file_each(
    runner: CliRunner, month: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "mailing"
    result = runner.invoke(
        main,
        [
            "report",
            "--format",
            "html",
            "--all-organizations",
            "--month",
            "2026-10",
            "--out",
            str(out),
        ],
        env=month,
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == f"2 SLA report(s) for 2026-10 written to {out}\n"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["sla-2026-10-acme-corp.html", "sla-2026-10-globex.html"]
    globex = (out / "sla-2026-10-globex.html").read_text(encoding="utf-8")
    assert '<div class="value good" id="rpo-compliance">100.0%</div>' in globex
    assert "Every protected job met its RPO on every day of the period." in globex
    assert "Acme" not in globex


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--organization", "Acme Corp"], "--format html needs --out FILE.html"),
        (["--all-organizations"], "--format html needs --out DIR"),
        (
            ["--out", "x.html"],
            "--format html needs either --organization NAME|UID or --all-organizations",
        ),
        (
            ["--organization", "Acme Corp", "--all-organizations", "--out", "x"],
            "--format html needs either --organization NAME|UID or --all-organizations",
        ),
        (
            ["--organization", "Acme Corp", "--days", "7", "--out", "x.html"],
            "--days does not go with --format html: give --month YYYY-MM",
        ),
        (
            ["--organization", "Acme Corp", "--month", "2026-13", "--out", "x.html"],
            "--month '2026-13': give a month as YYYY-MM, e.g. 2026-11",
        ),
        (
            ["--organization", "Acme Corp", "--month", "2026-01", "--out", "x.html"],
            "nothing to report for 2026-01 for organization 'Acme Corp': no protected job "
            "and no session in that month (UTC); choose another --month",
        ),
        (
            ["--organization", "Acme Corp", "--out", "/proc/acme.html"],
            "--out '/proc/acme.html': cannot write in '/proc' (No such file or directory); "
            "choose another path",
        ),
    ],
)
def test_html_option_errors(
    runner: CliRunner, month: dict[str, str], args: list[str], message: str
) -> None:
    result = runner.invoke(main, ["report", "--format", "html", *args], env=month)
    assert (result.exit_code, result.stderr) == (2, f"error: {message}\n")


def test_month_and_out_need_html(runner: CliRunner, month: dict[str, str]) -> None:
    result = runner.invoke(main, ["report", "--month", "2026-10"], env=month)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --all-organizations, --month and --out go with --format html\n",
    )


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "this test needs a headless browser: apt-get install chromium (as .ci/run does)"
    return found


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Chromium, headless, on ``page``; no network beyond the file (every host unresolvable)."""
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def acme_page(acme: MonthlyReport, tmp_path: Path) -> Path:
    page = tmp_path / "acme.html"
    page.write_text(render_html(acme), encoding="utf-8")
    return page


def test_report_in_a_real_browser(acme_page: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert_self_contained(acme_page.read_text(encoding="utf-8"))
    shot = tmp_path / "acme.png"
    browse(acme_page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,1600")
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tiles and a chart: not blank
        counts = {c: n for n, c in colours}
    # the trend's lines are drawn, as lines (a filled area would be ten times as many pixels):
    # RPO compliance blue and success-rate green
    assert 300 < counts.get((0x1F, 0x6F, 0xEB), 0) < 15_000
    assert 300 < counts.get((0x1A, 0x7F, 0x37), 0) < 15_000

    dom = browse(acme_page, tmp_path / "profile", "--dump-dom").stdout.decode()
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    for expected in (
        "Backup SLA report: Acme Corp",
        "RPO compliance 81.6% 62 of 76 protected job-days met the RPO",
        "Success rate 80.5% 62 of 77 backup sessions succeeded",
        "Protected computers 2",
        "Protected jobs 2",
        "PC-ACCOUNTING Daily C: 24 h 2 2026-10-09 02:00 session",
        "Failed \u00d712 Network path not found",
        "Warning \u00d71 Low free space",
    ):
        assert expected in words, expected

    pdf = tmp_path / "acme.pdf"
    browse(acme_page, tmp_path / "profile", f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", content))
    assert 1 <= pages <= 4, pages


def test_options_are_checked_before_any_query(runner: CliRunner, tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}  # nothing listens
    base = ["report", "--format", "html", "--organization", "x", "--out", "x.html"]
    result = runner.invoke(main, [*base, "--month", "11/2026"], env=env)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --month '11/2026': give a month as YYYY-MM, e.g. 2026-11\n",
    )
    (tmp_path / "taken").write_text("x")
    result = runner.invoke(
        main, ["report", "--format", "html", "--all-organizations", "--out", "taken"], env=env
    )
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --out 'taken' is a file: give a directory\n",
    )


def test_file_names_are_ascii_and_distinct() -> None:
    window = month_window("2026-11")

    def named(name: str | None, uid: str) -> MonthlyReport:
        return MonthlyReport(uuid.UUID(uid), name, window, t(32), [])

    taken: set[str] = set()
    names = [
        file_name(named("Büro Müller GmbH", "b0000000-0000-4000-8000-000000000001"), taken),
        file_name(named("Büro Müller GmbH", "c0000000-0000-4000-8000-000000000002"), taken),
        file_name(named(None, "d0000000-0000-4000-8000-000000000003"), taken),
        file_name(named("東京", "e0000000-0000-4000-8000-000000000004"), taken),
    ]
    assert names == [
        "sla-2026-11-buro-muller-gmbh.html",
        "sla-2026-11-buro-muller-gmbh-c0000000.html",
        "sla-2026-11-d0000000.html",
        "sla-2026-11-e0000000.html",
    ]
