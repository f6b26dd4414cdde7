"""Restore points: the console's own evidence that a backup succeeded, kept over time.

``vspc.restore_points`` holds one row per restore point ever listed by
``/protectedWorkloads/computersManagedByConsole/restorePoints``. The console lists only the
points it still retains (retention merges the oldest away); a row is never deleted: a complete
read that no longer lists a point sets ``gone_at``, and a point listed again gets it null
again. Its indexes serve the questions the reporting views ask: a job's newest point before
an instant, a computer's newest point, the points created on a day, the newest point stored
(where an incremental read starts).

``etl_runs`` says how each run read the points (``restore_points_read``: a full read, only the
new ones, or refused by the console) and what it found; the time of the last complete full
read is where the next one is due from. ``etl_rejects.collection`` says which collection a
rejected record came from (null for rows written before this revision: they are all jobs).

``etl_name_pages.collection`` gets the comment that says which collections it holds now.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "vspc"
TZ = sa.TIMESTAMP(timezone=True)
NAME_PAGES_COLLECTION = (
    "organizations or agents",
    "the secondary collection the page belongs to: organizations, agents or management_agents",
)

RUN_COLUMNS = (
    (
        "restore_points_read",
        sa.Text(),
        "how the run read restore points: full (every point, may set gone_at), new (only "
        "points created since the newest stored, with an overlap) or refused (403/404: the "
        "stored points left as they are); null if it did not read them",
    ),
    ("restore_points_seen", sa.Integer(), "restore points the run's read listed"),
    ("restore_points_inserted", sa.Integer(), "restore points seen for the first time"),
    (
        "restore_points_gone",
        sa.Integer(),
        "restore points this run found merged away (gone_at set)",
    ),
)
REJECT_COLLECTION = (
    "collection the record came from, e.g. windows_jobs or restore_points (null before "
    "revision 0009: a job)"
)


def upgrade() -> None:
    op.create_table(
        "restore_points",
        sa.Column("instance_uid", UUID(as_uuid=True), nullable=False, comment="restore point uid"),
        sa.Column(
            "source", sa.Text(), nullable=False, comment="console the row came from (VSPC_SOURCE)"
        ),
        sa.Column(
            "backup_agent_uid",
            UUID(as_uuid=True),
            comment="agent (computer) the point protects (backup_agents.instance_uid)",
        ),
        sa.Column(
            "job_uid",
            UUID(as_uuid=True),
            comment="job that created it (backup_agent_jobs.instance_uid); null for a point of "
            "a job the console does not list (e.g. one the agent runs on its own)",
        ),
        sa.Column("backed_up_items", sa.Text(), comment="what was backed up (backedupItems)"),
        sa.Column("destination", sa.Text(), comment="where the point is stored"),
        sa.Column("size", sa.BigInteger(), comment="bytes of the point's backup file"),
        sa.Column(
            "increment_raw_data_size",
            sa.BigInteger(),
            comment="bytes of source data changed since the previous point (incrementRawDataSize)",
        ),
        sa.Column("source_size", sa.BigInteger(), comment="bytes of the protected source data"),
        sa.Column(
            "creation_date",
            TZ,
            nullable=False,
            comment="when the point was created: the end of the backup that made it",
        ),
        sa.Column("raw", JSONB(), nullable=False, comment="the record exactly as received"),
        sa.Column(
            "first_seen_at", TZ, nullable=False, comment="start of the run that first listed it"
        ),
        sa.Column(
            "last_run_id", sa.BigInteger(), comment="etl_runs.run_id that last wrote the row"
        ),
        sa.Column(
            "gone_at",
            TZ,
            comment="start of the first complete read that no longer listed it (retention "
            "merged it away); null while the console lists it",
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_restore_points"),
        schema=S,
        comment="restore points of computers managed by the console, from GET /api/v3/"
        "protectedWorkloads/computersManagedByConsole/restorePoints: one row per point ever "
        "listed, never deleted",
    )
    op.create_index(
        "ix_restore_points_job_uid_creation_date",
        "restore_points",
        ["job_uid", "creation_date"],
        schema=S,
    )
    op.create_index(
        "ix_restore_points_backup_agent_uid_creation_date",
        "restore_points",
        ["backup_agent_uid", "creation_date"],
        schema=S,
    )
    op.create_index(
        "ix_restore_points_source_creation_date",
        "restore_points",
        ["source", "creation_date"],
        schema=S,
    )
    for name, kind, comment in RUN_COLUMNS:
        op.add_column("etl_runs", sa.Column(name, kind, comment=comment), schema=S)
    op.add_column(
        "etl_rejects", sa.Column("collection", sa.Text(), comment=REJECT_COLLECTION), schema=S
    )
    op.alter_column(
        "etl_name_pages",
        "collection",
        schema=S,
        existing_type=sa.Text(),
        existing_nullable=False,
        comment=NAME_PAGES_COLLECTION[1],
        existing_comment=NAME_PAGES_COLLECTION[0],
    )


def downgrade() -> None:
    op.alter_column(
        "etl_name_pages",
        "collection",
        schema=S,
        existing_type=sa.Text(),
        existing_nullable=False,
        comment=NAME_PAGES_COLLECTION[0],
        existing_comment=NAME_PAGES_COLLECTION[1],
    )
    op.drop_column("etl_rejects", "collection", schema=S)
    for name, _, _ in reversed(RUN_COLUMNS):
        op.drop_column("etl_runs", name, schema=S)
    op.drop_table("restore_points", schema=S)
