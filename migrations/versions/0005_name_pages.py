"""Hashes of the name pages each sync read, so unchanged names are not parsed or staged again.

Every sync reads the organizations and Windows agents (often half as many as the jobs); a
page whose content is what the last complete read served describes names the warehouse
already holds. ``vspc.etl_name_pages`` keeps, per source and collection, a keyed 128-bit
BLAKE2b hash of each page of that read and its number of records; the key includes the ETL
version. It is a cache: emptying it only makes the next sync stage every name again. A sync
ignores it for a collection whose table holds fewer rows of the source than the pages listed
(rows deleted by hand are restored).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "etl_name_pages",
        sa.Column("source", sa.Text(), nullable=False, comment="console the pages were read from"),
        sa.Column("collection", sa.Text(), nullable=False, comment="organizations or agents"),
        sa.Column(
            "page_digest",
            sa.LargeBinary(),
            nullable=False,
            comment="keyed BLAKE2b-128 of one page as received (key: the ETL version)",
        ),
        sa.Column("records", sa.Integer(), nullable=False, comment="records on that page"),
        sa.PrimaryKeyConstraint("source", "collection", "page_digest", name="pk_etl_name_pages"),
        schema="vspc",
        comment="ETL cache: hashes of the name pages the last complete read of each collection "
        "served, so unchanged pages are not parsed or staged again; safe to truncate (the next "
        "sync stages every name and refills it)",
    )


def downgrade() -> None:
    op.drop_table("etl_name_pages", schema="vspc")
