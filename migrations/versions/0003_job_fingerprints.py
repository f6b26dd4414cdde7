"""Fingerprints of the records behind the current jobs, so an unchanged re-sync skips work.

``vspc.etl_job_fingerprints`` holds, per live job, a keyed 128-bit BLAKE2b hash of the record
the warehouse row was last compared with. A page's records whose hash matches are staged by
uid only: not transformed, not COPYed in full, not compared column by column. The table is a
cache and nothing else: emptying it (``TRUNCATE vspc.etl_job_fingerprints``) only makes the
next sync compare every job in full, which refills it. The hash key includes the ETL version,
so an upgrade that transforms differently never trusts an older fingerprint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "etl_job_fingerprints",
        sa.Column(
            "instance_uid",
            pg.UUID(as_uuid=True),
            nullable=False,
            comment="backup_agent_jobs.instance_uid",
        ),
        sa.Column(
            "fingerprint",
            sa.LargeBinary(),
            nullable=False,
            comment="keyed BLAKE2b-128 of the record as received (key: the ETL version)",
        ),
        sa.PrimaryKeyConstraint("instance_uid", name="pk_etl_job_fingerprints"),
        schema="vspc",
        comment="ETL cache: hash of the record behind each job, so unchanged jobs skip the "
        "transform; safe to truncate (the next sync compares in full and refills it)",
    )


def downgrade() -> None:
    op.drop_table("etl_job_fingerprints", schema="vspc")
