"""docs/: the contract names every table, view, column and variable; citations resolve.

``docs/contract.md`` is the promise to users, so it may not fall behind the schema at head or
the settings: every relation of schema vspc has a section whose heading names it
(``vspc.NAME``), and every column of it appears in that section. Every ``*.md`` path a
docstring or comment of the code cites must be a file of the repository.
"""

from __future__ import annotations

import re
import subprocess
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
    assert len(relations) == 19  # 15 tables, 4 views
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

    def exists(where: str, doc: str) -> bool:
        """A path from the repository's root, or a Markdown link relative to its document."""
        relative = where.endswith(".md") and (ROOT / where).parent.joinpath(doc).is_file()
        return (ROOT / doc).is_file() or relative

    assert sorted((where, doc) for where, doc in cited if not exists(where, doc)) == []
    # The documents of the shared workspace are not cited: what the code relies on is in docs/.
    assert not [where for where, doc in cited if doc.startswith("shared/")]


# -- the documents a user reads ---------------------------------------------------------------

README = ROOT / "README.md"
README_MAX_LINES = 250
# Work-history wording: the repository speaks of the product, git keeps the history.
HISTORY = re.compile(r"\b(stop|issue) [0-9]+\b", re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def documents() -> list[Path]:
    """The Markdown a user reads: the README, the changelog, docs/ and the benchmark results."""
    return [
        README,
        ROOT / "CHANGELOG.md",
        *sorted(ROOT.glob("docs/*.md")),
        ROOT / "bench/RESULTS.md",
    ]


def anchors(doc: str) -> set[str]:
    """GitHub's anchors of a Markdown document's headings (lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered)."""
    found: set[str] = set()
    for line in FENCE.sub("", doc).splitlines():
        heading = re.match(r"#+ (.*)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(path: Path, doc: str) -> list[str]:
    """Each relative link of ``doc`` (a file at ``path``) to a missing file or anchor."""
    broken: list[str] = []
    for target in LINK.findall(FENCE.sub("", doc)):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file, _, anchor = target.partition("#")
        if not file:  # an anchor of this document
            if anchor not in anchors(doc):
                broken.append(target)
            continue
        linked = (path.parent / file).resolve()
        missing_anchor = (
            linked.exists()
            and bool(anchor)
            and (linked.suffix != ".md" or anchor not in anchors(linked.read_text("utf-8")))
        )
        if not linked.exists() or missing_anchor:
            broken.append(target)
    return broken


def tracked_text_files() -> list[Path]:
    """The repository's files as git tracks them (every file outside the usual local
    directories when there is no git), without the binary ones."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        paths = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        local = {".git", ".venv", ".vspc-etl", "__pycache__", ".mypy_cache", ".ruff_cache"}
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not local & set(p.parts)]
    texts = []
    for path in paths:
        if path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            texts.append(path)
    return texts


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 100 < len(lines) <= README_MAX_LINES


def test_the_readme_names_every_setting() -> None:
    readme = README.read_text(encoding="utf-8")
    variables = sorted(name.upper() for name in Settings.model_fields)
    assert [v for v in variables if f"`{v}`" not in readme] == []
    assert "`<NAME>_FILE`" in readme


def test_every_relative_link_resolves() -> None:
    checked = {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in documents()
    }
    assert sum(len(LINK.findall(doc)) for doc in checked.values()) >= 30
    broken = {name: broken_links(ROOT / name, doc) for name, doc in checked.items()}
    assert {name: links for name, links in broken.items() if links} == {}


def test_the_link_check_bites() -> None:
    readme = README.read_text(encoding="utf-8")
    assert broken_links(README, readme + "\n[x](docs/missing.txt)\n") == ["docs/missing.txt"]
    assert broken_links(README, readme + "\n[x](#no-such-heading)\n") == ["#no-such-heading"]
    assert broken_links(README, readme + "\n[x](docs/operations.md#nowhere)\n") == [
        "docs/operations.md#nowhere"
    ]
    assert broken_links(README, "[x](https://example.com/a#b) [y](#quickstart)") == ["#quickstart"]
    assert {"quickstart", "commands", "troubleshooting"} <= anchors(readme)
    assert anchors("# A `b` / c\n## A `b` / c\n```\n# not a heading\n```") == {
        "a-b--c",
        "a-b--c-1",
    }


def test_no_work_history_in_the_repository() -> None:
    files = tracked_text_files()
    assert len(files) >= 100
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []
    # spelt in two pieces, or this very line would be found
    assert HISTORY.search("measured at Stop " + "12") and HISTORY.search("see issue " + "6")
    assert not HISTORY.search("a job that stops 3 times")
