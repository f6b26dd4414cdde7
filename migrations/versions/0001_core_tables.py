"""Core tables: current jobs, SCD2 snapshots, run log, rejects.

The column list is written out here on purpose (not imported from ``etl.load.schema``): a
migration is a frozen record of what it did, and must not change when the app's metadata does.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
TZ = pg.TIMESTAMP(timezone=True)


def _business() -> list[sa.Column[object]]:
    uuid = pg.UUID(as_uuid=True)
    return [
        sa.Column("instance_uid", uuid, nullable=False, comment="VSPC job instanceUid"),
        sa.Column(
            "source", sa.Text, nullable=False, comment="console the row came from (VSPC_SOURCE)"
        ),
        sa.Column("backup_agent_uid", uuid, comment="agent (computer) uid"),
        sa.Column("organization_uid", uuid, comment="company/reseller/provider uid"),
        sa.Column("name", sa.Text, comment="job name"),
        sa.Column("description", sa.Text, comment="job description (VSPC 9.0+)"),
        sa.Column("config_uid", uuid, comment="job configuration uid"),
        sa.Column("backup_policy_uid", uuid, comment="backup policy uid"),
        sa.Column("backup_policy_name", sa.Text, comment="backup policy name (VSPC 9.0+)"),
        sa.Column(
            "backup_policy_assign_status",
            sa.Text,
            comment="policy assignment: Unknown, Applying, Assigned, Unassigned, Custom, "
            "Deleting, FailedToApply, Outdated, Warning (or a newer value as received)",
        ),
        sa.Column(
            "backup_policy_failure_message", sa.Text, comment="why the policy failed to apply"
        ),
        sa.Column(
            "status",
            sa.Text,
            nullable=False,
            comment="status of the latest session: None, Success, Warning, Failed, Running, "
            "Starting, Stopping, Unknown (or a newer value as received)",
        ),
        sa.Column("operation_mode", sa.Text, comment="Server, Workstation, UnLicensed, Unknown"),
        sa.Column("destination", sa.Text, comment="backup target path, e.g. C:\\VeeamBackup"),
        sa.Column("restore_points", sa.Integer, comment="number of restore points"),
        sa.Column("last_run", TZ, comment="start of the latest session"),
        sa.Column("last_end_time", TZ, comment="end of the latest session"),
        sa.Column("last_duration", sa.Integer, comment="duration of the latest session, seconds"),
        sa.Column("next_run", TZ, comment="next scheduled start"),
        sa.Column("avg_duration", sa.Integer, comment="average session duration, seconds"),
        sa.Column("backup_mode", sa.Text, comment="EntireComputer, Volume, File, Unknown"),
        sa.Column("target_type", sa.Text, comment="Local, Cloud, Unknown"),
        sa.Column("is_enabled", sa.Boolean, comment="job enabled"),
        sa.Column(
            "schedule_type",
            sa.Text,
            comment="NotScheduled, Daily, Monthly, Periodically, Continuously, Unknown",
        ),
        sa.Column(
            "schedule_events",
            pg.ARRAY(sa.Text),
            comment="AtLock, AtLogoff, WhenBackupTargetIsConnected, Unknown",
        ),
        sa.Column("last_modified_date", TZ, comment="when the job configuration last changed"),
        sa.Column(
            "last_modified_by", sa.Text, comment="who last changed it, e.g. vspc\\administrator"
        ),
        sa.Column("failure_message", sa.Text, comment="failure message of the latest session"),
        sa.Column("backed_up_size", sa.BigInteger, comment="bytes in all restore points"),
        sa.Column(
            "free_space", sa.BigInteger, comment="free bytes on the target; null if never ran"
        ),
        sa.Column("raw", pg.JSONB, nullable=False, comment="the record exactly as received"),
    ]


def upgrade() -> None:
    op.create_table(
        "etl_runs",
        sa.Column("run_id", sa.BigInteger, sa.Identity(always=True), comment="run identifier"),
        sa.Column("source", sa.Text, nullable=False, comment="console the run read"),
        sa.Column("started_at", TZ, comment="when the run started"),
        sa.Column("finished_at", TZ, comment="when the run ended"),
        sa.Column("status", sa.Text, nullable=False, comment="running, success, failed or skipped"),
        sa.Column(
            "complete",
            sa.Boolean,
            comment="the extract was verified complete (deletions were only applied if true)",
        ),
        sa.Column("pages", sa.Integer, comment="HTTP pages read"),
        sa.Column("jobs_seen", sa.Integer, comment="distinct jobs in the extract"),
        sa.Column("jobs_inserted", sa.Integer, comment="jobs seen for the first time"),
        sa.Column("jobs_updated", sa.Integer, comment="jobs whose content changed (or came back)"),
        sa.Column("jobs_unchanged", sa.Integer, comment="jobs seen with no change"),
        sa.Column("jobs_deleted", sa.Integer, comment="jobs soft-deleted by this run"),
        sa.Column("jobs_rejected", sa.Integer, comment="records written to etl_rejects"),
        sa.Column("error", sa.Text, comment="why the run failed or what was withheld"),
        sa.Column("etl_version", sa.Text, comment="vspc-etl package version"),
        sa.PrimaryKeyConstraint("run_id", name="pk_etl_runs"),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'failed', 'skipped')", name="ck_etl_runs_status"
        ),
        schema=S,
        comment="one row per ETL run, committed even when the run fails",
    )
    op.create_index("ix_etl_runs_source_started_at", "etl_runs", ["source", "started_at"], schema=S)

    op.create_table(
        "backup_agent_jobs",
        *_business(),
        sa.Column(
            "first_seen_at", TZ, nullable=False, comment="start of the run that first saw the job"
        ),
        sa.Column(
            "updated_at",
            TZ,
            nullable=False,
            comment="start of the run that last changed its content",
        ),
        sa.Column(
            "deleted_at",
            TZ,
            comment="start of the complete run that no longer found the job; null while it exists",
        ),
        sa.Column("last_run_id", sa.BigInteger, comment="etl_runs.run_id that last wrote the row"),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_backup_agent_jobs"),
        schema=S,
        comment="Windows backup agent jobs from VSPC: one row per job ever seen, current state",
    )
    op.create_index(
        "ix_backup_agent_jobs_source_deleted_at",
        "backup_agent_jobs",
        ["source", "deleted_at"],
        schema=S,
    )

    op.create_table(
        "backup_agent_job_snapshots",
        *_business(),
        sa.Column(
            "valid_from", TZ, nullable=False, comment="start of the run that observed this version"
        ),
        sa.Column(
            "valid_to",
            TZ,
            comment="start of the run that observed the next version; null = current version",
        ),
        sa.Column(
            "is_deleted",
            sa.Boolean,
            nullable=False,
            comment="true for the version that records the job's disappearance",
        ),
        sa.Column(
            "run_id",
            sa.BigInteger,
            nullable=False,
            comment="etl_runs.run_id that wrote the version",
        ),
        sa.PrimaryKeyConstraint("instance_uid", "valid_from", name="pk_backup_agent_job_snapshots"),
        sa.CheckConstraint(
            "valid_to IS NULL OR valid_to > valid_from",
            name="ck_backup_agent_job_snapshots_interval",
        ),
        schema=S,
        comment="SCD type 2 history of backup_agent_jobs; a version holds for "
        "valid_from <= t < valid_to",
    )
    op.create_index(
        "uq_backup_agent_job_snapshots_current",
        "backup_agent_job_snapshots",
        ["instance_uid"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.create_index(
        "ix_backup_agent_job_snapshots_valid_from",
        "backup_agent_job_snapshots",
        ["valid_from"],
        schema=S,
    )

    op.create_table(
        "etl_rejects",
        sa.Column(
            "reject_id", sa.BigInteger, sa.Identity(always=True), comment="reject identifier"
        ),
        sa.Column(
            "run_id", sa.BigInteger, nullable=False, comment="etl_runs.run_id that rejected it"
        ),
        sa.Column(
            "instance_uid", sa.Text, comment="instanceUid as received (may be null or invalid)"
        ),
        sa.Column("reason", sa.Text, nullable=False, comment="which field, what was wrong"),
        sa.Column("raw", pg.JSONB, nullable=False, comment="the record as received"),
        sa.Column("rejected_at", TZ, nullable=False, comment="when it was rejected"),
        sa.PrimaryKeyConstraint("reject_id", name="pk_etl_rejects"),
        schema=S,
        comment="records that could not be loaded, never silently dropped",
    )
    op.create_index("ix_etl_rejects_run_id", "etl_rejects", ["run_id"], schema=S)


def downgrade() -> None:
    op.drop_table("etl_rejects", schema=S)
    op.drop_table("backup_agent_job_snapshots", schema=S)
    op.drop_table("backup_agent_jobs", schema=S)
    op.drop_table("etl_runs", schema=S)
