"""The modules' imports: no cycles, and each layer reaches only the layers below it."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from etl.collections import NamesRead, PageRead, ReadFailed
from etl.extract import reader
from etl.extract.names import Names

PACKAGE = Path(__file__).resolve().parent.parent / "etl"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports, wherever in the file (a function's import is
    an edge too). ``from package import submodule`` is an edge to the submodule alone."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [{"a", "b", "c"}]


@pytest.mark.parametrize(
    ("layer", "may_not_import"),
    [
        ("etl.transform", ("etl.extract", "etl.load", "etl.pipeline", "etl.collections")),
        ("etl.extract", ("etl.load", "etl.pipeline")),
        ("etl.collections", ("etl.load", "etl.pipeline")),
        ("etl.load", ("etl.extract.client", "etl.extract.reader", "etl.pipeline")),
    ],
)
def test_each_layer_imports_only_what_is_below_it(
    layer: str, may_not_import: tuple[str, ...]
) -> None:
    edges = graph()
    wrong = {
        (module, target)
        for module, targets in edges.items()
        if module == layer or module.startswith(f"{layer}.")
        for target in targets
        if any(target == f or target.startswith(f"{f}.") for f in may_not_import)
    }
    assert wrong == set()


def test_a_stopped_inbox_ends_a_reader_waiting_for_room() -> None:
    inbox = reader.Inbox()
    channel = inbox.channel(1)
    channel.put(PageRead("jobs", []))  # full now
    ended = threading.Event()

    def work() -> None:
        try:
            channel.put(PageRead("jobs", [1]))
        finally:
            ended.set()

    thread = reader.start("test", channel, work)
    assert not ended.wait(0.3)  # waiting for room
    inbox.stop()
    thread.join(5)
    assert ended.is_set() and not thread.is_alive()
    assert inbox.get() == PageRead("jobs", [])  # the stopped reader handed nothing over


def test_a_reader_failure_reaches_the_loader_as_an_item() -> None:
    inbox = reader.Inbox()
    channel = inbox.channel(1)
    error = RuntimeError("the console went away")

    def work() -> None:
        channel.put(NamesRead(Names()))  # the channel is full now: the failure still gets in
        raise error

    reader.start("names", channel, work).join(5)
    assert inbox.get() == NamesRead(Names())
    assert inbox.get() == ReadFailed("names", error)


def test_a_full_channel_does_not_keep_another_reader_out() -> None:
    inbox = reader.Inbox()
    jobs, names = inbox.channel(1), inbox.channel(1)
    jobs.put(PageRead("jobs", [1]))
    waiting = reader.start("jobs", jobs, lambda: jobs.put(PageRead("jobs", [2])))
    names.put(PageRead("organizations", ["a"]))  # does not wait for the job page's room
    assert inbox.get() == PageRead("jobs", [1])
    waiting.join(5)
    assert [inbox.get(), inbox.get()] == [
        PageRead("organizations", ["a"]),
        PageRead("jobs", [2]),
    ]


def test_polling_the_inbox_takes_only_what_waits_and_makes_room() -> None:
    inbox = reader.Inbox()
    names = inbox.channel(1)
    assert inbox.poll() is None  # nothing waits: no waiting either
    names.put(PageRead("organizations", ["a"]))  # full now
    second = reader.start("names", names, lambda: names.put(PageRead("organizations", ["b"])))
    assert inbox.poll() == PageRead("organizations", ["a"])  # and its room is given back
    second.join(5)
    assert not second.is_alive()
    assert inbox.poll() == PageRead("organizations", ["b"])
    assert inbox.poll() is None
