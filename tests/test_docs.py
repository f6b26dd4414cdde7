"""docs/: the contract names every table, view, column and variable; citations resolve.

``docs/contract.md`` is the promise to users, so it may not fall behind the schema at head or
the settings: every relation of schema vspc has a section whose heading names it
(``vspc.NAME``), and every column of it appears in that section. Every ``*.md`` path a
docstring or comment of the code cites must be a file of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from etl.config import SECRET_VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs/contract.md"
# The snapshots' business columns are those of backup_agent_jobs, described there once.
SAME_COLUMNS_AS = {"backup_agent_job_snapshots": "backup_agent_jobs"}


def section(doc: str, name: str) -> str:
    """The text under the first heading naming ``vspc.NAME``, to the next heading as high."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"(#+) ", line)
        if heading and f"`vspc.{name}`" in line:
            level = len(heading.group(1))
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if (m := re.match(r"(#+) ", lines[j])) and len(m.group(1)) <= level
                ),
                len(lines),
            )
            return "\n".join(lines[i:end])
    raise LookupError(f"docs/contract.md has no heading naming `vspc.{name}`")


def undocumented(doc: str, relations: dict[str, list[str]]) -> list[str]:
    missing: list[str] = []
    for name, columns in sorted(relations.items()):
        try:
            body = section(doc, name)
        except LookupError:
            missing.append(name)
            continue
        if name in SAME_COLUMNS_AS:
            body += section(doc, SAME_COLUMNS_AS[name])
        missing += [f"{name}.{c}" for c in columns if not re.search(rf"\b{c}\b", body)]
    return missing


@pytest.fixture(scope="module")
def relations(engine: Engine) -> dict[str, list[str]]:
    """Every table and view of vspc at head with its columns."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, a.attname FROM pg_class c "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
                "AND NOT a.attisdropped "
                "WHERE c.relnamespace = 'vspc'::regnamespace AND c.relkind IN ('r', 'v') "
                "AND c.relname <> 'alembic_version' ORDER BY c.relname, a.attnum"
            )
        ).all()
    found: dict[str, list[str]] = {}
    for relation, column in rows:
        found.setdefault(relation, []).append(column)
    return found


def test_the_contract_describes_every_table_view_and_column(
    relations: dict[str, list[str]],
) -> None:
    assert len(relations) == 17  # 14 tables, 3 views
    assert undocumented(CONTRACT.read_text(), relations) == []


def test_the_contract_check_bites(relations: dict[str, list[str]]) -> None:
    doc = CONTRACT.read_text()
    assert undocumented(doc.replace("| rpo_compliance |", "| compliance |"), relations) == [
        "sla_daily.rpo_compliance"
    ]
    assert undocumented(doc.replace("`vspc.job_runs`", "`job_runs`"), relations) == ["job_runs"]
    added = relations | {"job_runs": [*relations["job_runs"], "run_id"]}
    assert undocumented(doc, added) == ["job_runs.run_id"]


def test_the_contract_names_every_configuration_variable() -> None:
    doc = CONTRACT.read_text()
    variables = {name.upper() for name in Settings.model_fields}
    assert [v for v in sorted(variables) if f"`{v}`" not in doc] == []
    assert all(f"`{secret}`" in doc for secret in SECRET_VARIABLES)
    assert "`<NAME>_FILE`" in doc


def test_every_cited_document_is_in_the_repository() -> None:
    sources = [
        *ROOT.joinpath("etl").rglob("*.py"),
        *ROOT.joinpath("etl").rglob("*.sql"),
        *ROOT.joinpath("migrations").rglob("*.py"),
        *ROOT.joinpath("tests").rglob("*.py"),
        *ROOT.joinpath("bench").rglob("*.py"),
        ROOT / "Dockerfile",
        *ROOT.joinpath("docs").glob("*.md"),
    ]
    cited = {
        (path.relative_to(ROOT).as_posix(), found)
        for path in sources
        for found in re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8"))
    }
    assert len(cited) >= 10
    assert sorted((where, doc) for where, doc in cited if not (ROOT / doc).is_file()) == []
    # The documents of the shared workspace are not cited: what the code relies on is in docs/.
    assert not [where for where, doc in cited if doc.startswith("shared/")]
