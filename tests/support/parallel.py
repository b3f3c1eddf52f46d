"""What `make test` needs to run the suite on several pytest-xdist workers (`-n N --dist
loadgroup`): groups that keep a module's shared fixtures in one worker, slow tests first, and a
lock that lets every worker share one file made once per run.

Without `-n` none of this changes anything: the groups are marks no scheduler reads, and the
order is pytest's own.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Fixture scopes that outlive one test: the tests that share such a fixture run in one worker,
#: so it is made once, as in a serial run, instead of once per worker that got one of them.
SHARED_SCOPES = frozenset({"class", "module", "package"})


def shared_fixtures(item: pytest.Item) -> set[str]:
    """Names of the module-, class- or package-scoped fixtures `item` uses (autouse included)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    names: set[str] = set()
    for name, definitions in info.name2fixturedefs.items():
        # The last definition is the one this item gets (the closest conftest or module).
        if definitions and definitions[-1].scope in SHARED_SCOPES:
            names.add(name)
    return names


def group_by_shared_fixtures(items: list[pytest.Item]) -> None:
    """Mark with one `xdist_group` each set of a module's tests linked by a shared fixture.

    Tests of a module that share no fixture (most of them) stay free to run anywhere; two tests
    that share one directly or through a third land in one group. Tests already in a group keep
    it.
    """
    by_module: dict[str, list[tuple[pytest.Item, set[str]]]] = {}
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        names = shared_fixtures(item)
        if names:
            by_module.setdefault(item.nodeid.split("::", 1)[0], []).append((item, names))
    for module, members in by_module.items():
        root = _linked(members)
        for item, names in members:
            item.add_marker(pytest.mark.xdist_group(f"{module}::{root[min(names)]}"))


def _linked(members: list[tuple[pytest.Item, set[str]]]) -> dict[str, str]:
    """Each fixture name -> the smallest name of the fixtures linked to it through the tests."""
    groups: list[set[str]] = []
    for _, names in members:
        touching = [group for group in groups if group & names]
        merged = set(names).union(*touching)
        groups = [group for group in groups if not group & names] + [merged]
    return {name: min(group) for group in groups for name in group}


def name_the_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each grouped test the `@group` suffix `--dist loadgroup` schedules by, where
    pytest-xdist's own renaming did not take (run after xdist's hook).

    xdist 3.8 renames a test by setting `item._nodeid`, which pytest 9.2's structured node ids
    no longer read (pytest-xdist issue 1386, fix pending in pull request 1388): every group
    would be scattered over the workers and each worker would build the module fixtures (the
    installed-wheels virtualenv, a server process) again. This sets the id pytest 9.2 reads; a
    pytest whose ids work neither way stops the run instead of scattering the groups.
    """
    if not config.getvalue("loadgroup"):
        return
    for item in items:
        groups = sorted(
            {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
        )
        suffix = "@" + "_".join(groups)
        if not groups or item.nodeid.endswith(suffix):
            continue
        named = item.nodeid + suffix
        node_id = getattr(item, "_id", None)
        if node_id is not None and hasattr(node_id, "parse"):  # pytest >= 9.2's NodeId
            item._id = type(node_id).parse(named)
        if item.nodeid != named:
            raise pytest.UsageError(
                f"cannot give {item.nodeid} its xdist group: --dist loadgroup would scatter "
                "the tests that share a fixture (see tests/support/parallel.py)"
            )


def slow_first(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first, each part in collection order: the scheduler hands work out in
    this order, so the long tests start at once instead of ending the run on one busy worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), held for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
