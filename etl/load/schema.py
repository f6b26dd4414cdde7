"""The warehouse tables of ``docs/contract.md`` as SQLAlchemy Core metadata.

Alembic migrations create and change the real schema; this metadata mirrors head so that
``alembic check`` proves the two agree, and the loader builds its SQL from the column lists.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

SCHEMA = "vspc"

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)

TZ = TIMESTAMP(timezone=True)


def business_columns() -> list[Column[object]]:
    """The 29 columns copied from a VSPC job record, in contract order, plus ``raw``."""
    return [
        Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="VSPC job instanceUid"),
        Column("source", Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"),
        Column("backup_agent_uid", UUID(as_uuid=True), comment="agent (computer) uid"),
        Column("organization_uid", UUID(as_uuid=True), comment="company/reseller/provider uid"),
        Column("name", Text, comment="job name"),
        Column("description", Text, comment="job description (VSPC 9.0+)"),
        Column("config_uid", UUID(as_uuid=True), comment="job configuration uid"),
        Column("backup_policy_uid", UUID(as_uuid=True), comment="backup policy uid"),
        Column("backup_policy_name", Text, comment="backup policy name (VSPC 9.0+)"),
        Column(
            "backup_policy_assign_status",
            Text,
            comment="policy assignment: Unknown, Applying, Assigned, Unassigned, Custom, "
            "Deleting, FailedToApply, Outdated, Warning (or a newer value as received)",
        ),
        Column("backup_policy_failure_message", Text, comment="why the policy failed to apply"),
        Column(
            "status",
            Text,
            nullable=False,
            comment="status of the latest session: None, Success, Warning, Failed, Running, "
            "Starting, Stopping, Unknown (or a newer value as received)",
        ),
        Column("operation_mode", Text, comment="Server, Workstation, UnLicensed, Unknown"),
        Column("destination", Text, comment="backup target path, e.g. C:\\VeeamBackup"),
        Column("restore_points", Integer, comment="number of restore points"),
        Column("last_run", TZ, comment="start of the latest session"),
        Column("last_end_time", TZ, comment="end of the latest session"),
        Column("last_duration", Integer, comment="duration of the latest session, seconds"),
        Column("next_run", TZ, comment="next scheduled start"),
        Column("avg_duration", Integer, comment="average session duration, seconds"),
        Column("backup_mode", Text, comment="EntireComputer, Volume, File, Unknown"),
        Column(
            "target_type",
            Text,
            comment="Windows: Local, Cloud, Unknown; Linux and Mac: BackupRepository, "
            "CloudRepository, LocalFolder, SharedFolder, Unknown",
        ),
        Column("is_enabled", Boolean, comment="job enabled"),
        Column(
            "schedule_type",
            Text,
            comment="NotScheduled, Daily, Monthly, Periodically, Continuously, Unknown",
        ),
        Column(
            "schedule_events",
            ARRAY(Text),
            comment="AtLock, AtLogoff, WhenBackupTargetIsConnected, Unknown; null for Linux "
            "and Mac jobs (their API has no such field)",
        ),
        Column("last_modified_date", TZ, comment="when the job configuration last changed"),
        Column("last_modified_by", Text, comment="who last changed it, e.g. vspc\\administrator"),
        Column("failure_message", Text, comment="failure message of the latest session"),
        Column("backed_up_size", BigInteger, comment="bytes in all restore points"),
        Column("free_space", BigInteger, comment="free bytes on the target; null if never ran"),
        Column(
            "system_type",
            Text,
            nullable=False,
            comment="platform of the agent: Windows, Linux or Mac (the collection the job was "
            "read from, spelled as the API's systemType)",
        ),
        Column("raw", JSONB, nullable=False, comment="the record exactly as received"),
    ]


backup_agent_jobs = Table(
    "backup_agent_jobs",
    metadata,
    *business_columns(),
    Column("first_seen_at", TZ, nullable=False, comment="start of the run that first saw the job"),
    Column(
        "updated_at", TZ, nullable=False, comment="start of the run that last changed its content"
    ),
    Column(
        "deleted_at",
        TZ,
        comment="start of the complete run that no longer found the job; null while it exists",
    ),
    Column("last_run_id", BigInteger, comment="etl_runs.run_id that last wrote the row"),
    PrimaryKeyConstraint("instance_uid"),
    Index(None, "source", "deleted_at"),
    comment="backup agent jobs (Windows, Linux, Mac) from VSPC: one row per job ever seen, "
    "current state",
)

backup_agent_job_snapshots = Table(
    "backup_agent_job_snapshots",
    metadata,
    *business_columns(),
    Column("valid_from", TZ, nullable=False, comment="start of the run that observed this version"),
    Column(
        "valid_to",
        TZ,
        comment="start of the run that observed the next version; null = current version",
    ),
    Column(
        "is_deleted",
        Boolean,
        nullable=False,
        comment="true for the version that records the job's disappearance",
    ),
    Column("run_id", BigInteger, nullable=False, comment="etl_runs.run_id that wrote the version"),
    PrimaryKeyConstraint("instance_uid", "valid_from"),
    CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="interval"),
    Index(
        "uq_backup_agent_job_snapshots_current",
        "instance_uid",
        unique=True,
        postgresql_where=text("valid_to IS NULL"),
    ),
    Index(None, "valid_from"),
    # Reporting (0002): "versions valid at t" for recent t reads only recent versions.
    Index(None, "valid_to"),
    comment="SCD type 2 history of backup_agent_jobs; a version holds for "
    "valid_from <= t < valid_to",
)

etl_runs = Table(
    "etl_runs",
    metadata,
    Column("run_id", BigInteger, Identity(always=True), comment="run identifier"),
    Column("source", Text, nullable=False, comment="console the run read"),
    Column("started_at", TZ, comment="when the run started"),
    Column("finished_at", TZ, comment="when the run ended"),
    Column("status", Text, nullable=False, comment="running, success, failed or skipped"),
    Column(
        "complete",
        Boolean,
        comment="the extract was verified complete (deletions were only applied if true)",
    ),
    Column("pages", Integer, comment="HTTP pages read"),
    Column("jobs_seen", Integer, comment="distinct jobs in the extract"),
    Column("jobs_inserted", Integer, comment="jobs seen for the first time"),
    Column("jobs_updated", Integer, comment="jobs whose content changed (or came back)"),
    Column("jobs_unchanged", Integer, comment="jobs seen with no change"),
    Column("jobs_deleted", Integer, comment="jobs soft-deleted by this run"),
    Column("jobs_rejected", Integer, comment="records written to etl_rejects"),
    Column("error", Text, comment="why the run failed or what was withheld"),
    Column("etl_version", Text, comment="vspc-etl package version"),
    Column(
        "restore_points_read",
        Text,
        comment="how the run read restore points: full (every point, may set gone_at), new "
        "(only points created since the newest stored, with an overlap) or refused (403/404: "
        "the stored points left as they are); null if it did not read them",
    ),
    Column("restore_points_seen", Integer, comment="restore points the run's read listed"),
    Column("restore_points_inserted", Integer, comment="restore points seen for the first time"),
    Column(
        "restore_points_gone",
        Integer,
        comment="restore points this run found merged away (gone_at set)",
    ),
    PrimaryKeyConstraint("run_id"),
    CheckConstraint("status IN ('running', 'success', 'failed', 'skipped')", name="status"),
    Index(None, "source", "started_at"),
    comment="one row per ETL run, committed even when the run fails",
)

etl_rejects = Table(
    "etl_rejects",
    metadata,
    Column("reject_id", BigInteger, Identity(always=True), comment="reject identifier"),
    Column("run_id", BigInteger, nullable=False, comment="etl_runs.run_id that rejected it"),
    Column("instance_uid", Text, comment="instanceUid as received (may be null or invalid)"),
    Column("reason", Text, nullable=False, comment="which field, what was wrong"),
    Column("raw", JSONB, nullable=False, comment="the record as received"),
    Column("rejected_at", TZ, nullable=False, comment="when it was rejected"),
    Column(
        "collection",
        Text,
        comment="collection the record came from, e.g. windows_jobs or restore_points (null "
        "before revision 0009: a job)",
    ),
    PrimaryKeyConstraint("reject_id"),
    Index(None, "run_id"),
    comment="records that could not be loaded, never silently dropped",
)

etl_job_fingerprints = Table(
    "etl_job_fingerprints",
    metadata,
    Column(
        "instance_uid", UUID(as_uuid=True), nullable=False, comment="backup_agent_jobs.instance_uid"
    ),
    Column(
        "fingerprint",
        LargeBinary,
        nullable=False,
        comment="keyed BLAKE2b-128 of the record as received (key: the ETL version)",
    ),
    PrimaryKeyConstraint("instance_uid"),
    comment="ETL cache: hash of the record behind each job, so unchanged jobs skip the "
    "transform; safe to truncate (the next sync compares in full and refills it)",
)
"""Revision 0003; see the migration for what it is for."""

etl_name_pages = Table(
    "etl_name_pages",
    metadata,
    Column("source", Text, nullable=False, comment="console the pages were read from"),
    Column(
        "collection",
        Text,
        nullable=False,
        comment="the secondary collection the page belongs to: organizations, agents or "
        "management_agents",
    ),
    Column(
        "page_digest",
        LargeBinary,
        nullable=False,
        comment="keyed BLAKE2b-128 of one page as received (key: the ETL version)",
    ),
    Column("records", Integer, nullable=False, comment="records on that page"),
    PrimaryKeyConstraint("source", "collection", "page_digest"),
    comment="ETL cache: hashes of the name pages the last complete read of each collection "
    "served, so unchanged pages are not parsed or staged again; safe to truncate (the next "
    "sync stages every name and refills it)",
)
"""Revision 0005; see the migration for what it is for."""

restore_points = Table(
    "restore_points",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="restore point uid"),
    Column("source", Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"),
    Column(
        "backup_agent_uid",
        UUID(as_uuid=True),
        comment="agent (computer) the point protects (backup_agents.instance_uid)",
    ),
    Column(
        "job_uid",
        UUID(as_uuid=True),
        comment="job that created it (backup_agent_jobs.instance_uid); null for a point of "
        "a job the console does not list (e.g. one the agent runs on its own)",
    ),
    Column("backed_up_items", Text, comment="what was backed up (backedupItems)"),
    Column("destination", Text, comment="where the point is stored"),
    Column("size", BigInteger, comment="bytes of the point's backup file"),
    Column(
        "increment_raw_data_size",
        BigInteger,
        comment="bytes of source data changed since the previous point (incrementRawDataSize)",
    ),
    Column("source_size", BigInteger, comment="bytes of the protected source data"),
    Column(
        "creation_date",
        TZ,
        nullable=False,
        comment="when the point was created: the end of the backup that made it",
    ),
    Column("raw", JSONB, nullable=False, comment="the record exactly as received"),
    Column("first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"),
    Column("last_run_id", BigInteger, comment="etl_runs.run_id that last wrote the row"),
    Column(
        "gone_at",
        TZ,
        comment="start of the first complete read that no longer listed it (retention merged "
        "it away); null while the console lists it",
    ),
    PrimaryKeyConstraint("instance_uid"),
    # gone_at included: the newest point listed at an instant is read from the index alone
    Index(None, "job_uid", "creation_date", postgresql_include=["gone_at"]),
    Index(None, "backup_agent_uid", "creation_date", postgresql_include=["gone_at"]),
    Index(None, "source", "creation_date"),
    Index(None, "creation_date"),
    comment="restore points of computers managed by the console, from GET /api/v3/"
    "protectedWorkloads/computersManagedByConsole/restorePoints: one row per point ever "
    "listed, never deleted",
)
"""Revision 0009; see the migration for what it is for."""

# ---------------------------------------------------------------- reporting (revision 0002)

organizations = Table(
    "organizations",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="VSPC organization uid"),
    Column("source", Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"),
    Column("name", Text, comment="organization name"),
    Column("alias", Text, comment="organization alias"),
    Column("type", Text, comment="Company, Provider, Reseller, Unknown (or a newer value)"),
    Column("first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"),
    Column("updated_at", TZ, nullable=False, comment="start of the run that last changed it"),
    PrimaryKeyConstraint("instance_uid"),
    comment="organization names from GET /api/v3/organizations, refreshed by each sync",
)

backup_agents = Table(
    "backup_agents",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="VSPC backup agent uid"),
    Column("source", Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"),
    Column("computer_name", Text, comment="name of the computer the agent runs on"),
    Column("organization_uid", UUID(as_uuid=True), comment="organization the agent belongs to"),
    Column("version", Text, comment="agent version"),
    Column(
        "status",
        Text,
        comment="agent status as reported: Active, NotRunning, Unknown (or a newer value as "
        "received)",
    ),
    Column("first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"),
    Column("updated_at", TZ, nullable=False, comment="start of the run that last changed it"),
    Column("agent_platform", Text, comment="Windows, Linux or Mac (the API's agentPlatform)"),
    Column(
        "management_agent_uid",
        UUID(as_uuid=True),
        comment="management agent of the computer (management_agents.instance_uid)",
    ),
    Column("operation_mode", Text, comment="Server, Workstation, UnLicensed, Unknown"),
    PrimaryKeyConstraint("instance_uid"),
    comment="backup agents of every platform (computer names) from GET "
    "/api/v3/infrastructure/backupAgents, refreshed by each sync",
)

management_agents = Table(
    "management_agents",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="VSPC management agent uid"),
    Column("source", Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"),
    Column("host_name", Text, comment="name of the computer the agent runs on"),
    Column("friendly_name", Text, comment="name the console shows for it"),
    Column("organization_uid", UUID(as_uuid=True), comment="organization the agent belongs to"),
    Column("location_uid", UUID(as_uuid=True), comment="location of the agent"),
    Column("version", Text, comment="management agent version"),
    Column(
        "status",
        Text,
        comment="health as reported: Healthy, Warning, Error, Inaccessible, Unknown "
        "(or a newer value as received)",
    ),
    Column(
        "connection_status",
        Text,
        comment="Online, Inaccessible, Rejected, Unknown (or a newer value as received)",
    ),
    Column(
        "last_heartbeat_at",
        TZ,
        comment="when the console last heard from the agent (lastHeartbeatTime)",
    ),
    Column("first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"),
    Column("updated_at", TZ, nullable=False, comment="start of the run that last changed it"),
    PrimaryKeyConstraint("instance_uid"),
    comment="management agents (the console's link to each computer: connection, heartbeat) "
    "from GET /api/v3/infrastructure/managementAgents, refreshed by each sync",
)

job_run_facts = Table(
    "job_run_facts",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="job instanceUid"),
    Column("started_at", TZ, nullable=False, comment="session start (the job's lastRun)"),
    Column("source", Text, nullable=False, comment="console the session was read from"),
    Column("organization_uid", UUID(as_uuid=True), comment="organization of the job"),
    Column("backup_agent_uid", UUID(as_uuid=True), comment="agent (computer) of the job"),
    Column("job_name", Text, comment="job name when the session was observed"),
    Column("ended_at", TZ, comment="session end (lastEndTime); null if not at/after the start"),
    Column("duration_s", Integer, comment="seconds from started_at to ended_at"),
    Column("status", Text, nullable=False, comment="final outcome: Success, Warning or Failed"),
    Column("failure_message", Text, comment="failure or warning message of the session"),
    Column("backed_up_size", BigInteger, comment="bytes in all restore points after it"),
    Column("restore_points", Integer, comment="restore points after it"),
    Column("run_id", BigInteger, nullable=False, comment="etl_runs.run_id that first recorded it"),
    # Keyed by time: each sync's sessions append (revision 0006).
    PrimaryKeyConstraint("started_at", "instance_uid"),
    CheckConstraint("status IN ('Success', 'Warning', 'Failed')", name="status"),
    Index(None, "organization_uid", "started_at"),
    Index(None, "ended_at"),
    comment="one row per observed job session with a final outcome, kept by each sync from "
    "the snapshot versions it writes; read it through the view job_runs",
)

job_sla_state = Table(
    "job_sla_state",
    metadata,
    Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="job instanceUid"),
    Column("last_started_at", TZ, nullable=False, comment="start of the job's latest session"),
    Column(
        "ok_started_at", TZ, comment="start of its latest Success or Warning session with an end"
    ),
    Column("ok_ended_at", TZ, comment="end of that session (job_sla_at.last_success_at)"),
    Column(
        "failures",
        Integer,
        nullable=False,
        comment="Failed sessions started after it (job_sla_at.consecutive_failures)",
    ),
    Column(
        "settled_at",
        TZ,
        comment="the answer holds from this instant on: the latest end (a failure without "
        "one: its start) of the sessions counted",
    ),
    PrimaryKeyConstraint("instance_uid"),
    comment="each job's latest success and failures since, from job_run_facts, kept by "
    "triggers on it (job_sla_current reads it); derived: SELECT "
    "vspc.job_sla_state_recompute(array_agg(DISTINCT instance_uid)) FROM "
    "vspc.job_run_facts rebuilds it",
)

sla_daily_counts = Table(
    "sla_daily_counts",
    metadata,
    Column("day", Date, nullable=False, comment="calendar day in report_settings.time_zone"),
    Column("organization_uid", UUID(as_uuid=True), comment="organization"),
    Column("jobs_protected", Integer, nullable=False, comment="live, enabled jobs at day end"),
    Column("runs", Integer, nullable=False, comment="sessions started that day"),
    Column("success_runs", Integer, nullable=False, comment="of which Success"),
    Column("warning_runs", Integer, nullable=False, comment="of which Warning"),
    Column("failed_runs", Integer, nullable=False, comment="of which Failed"),
    Column(
        "jobs_meeting_rpo",
        Integer,
        nullable=False,
        comment="protected jobs whose latest successful session ended, or newest restore point "
        "was created, within rpo_hours",
    ),
    Column("rpo_hours", Integer, nullable=False, comment="the RPO applied (sla_policy)"),
    Column(
        "restore_points_created",
        Integer,
        nullable=False,
        comment="restore points created that day by jobs live at its end, or without a known "
        "job by the organization's computers",
    ),
    UniqueConstraint("day", "organization_uid", postgresql_nulls_not_distinct=True),
    comment="sla_daily's numbers, kept by each sync and recomputed whole when sla_policy or "
    "report_settings change; read it through the view sla_daily",
)

sla_policy = Table(
    "sla_policy",
    metadata,
    Column(
        "organization_uid",
        UUID(as_uuid=True),
        comment="organization this row applies to; null = the default for all others",
    ),
    Column(
        "rpo_hours",
        Integer,
        nullable=False,
        comment="recovery point objective: a successful session must have ended within this "
        "many hours",
    ),
    UniqueConstraint("organization_uid", postgresql_nulls_not_distinct=True),
    CheckConstraint("rpo_hours > 0", name="rpo_hours"),
    comment="RPO per organization (edit with plain SQL; the row with a null organization_uid "
    "is the default, seeded with 24 hours)",
)

report_settings = Table(
    "report_settings",
    metadata,
    Column(
        "id",
        Boolean,
        nullable=False,
        server_default=text("true"),
        comment="always true: the table has one row",
    ),
    Column(
        "time_zone",
        Text,
        nullable=False,
        server_default=text("'UTC'"),
        comment="IANA time zone whose calendar days sla_daily and job_runs.day use",
    ),
    PrimaryKeyConstraint("id"),
    CheckConstraint("id", name="one_row"),
    comment="reporting settings, one row (edit with plain SQL: UPDATE vspc.report_settings "
    "SET time_zone = 'Europe/Berlin')",
)

BUSINESS = tuple(c.name for c in business_columns() if c.name not in ("source",))
"""Columns whose change makes a new version: the 29 fields, ``system_type`` and raw (not
``source``)."""
