"""How the suite is split across pytest-xdist workers (`make test`: `-n 2 --dist loadscope`).

* Work units (`work_unit`): a test module, or a whole folder where its tests share something that
  must exist once: tests/docker (one image build at a time, one set of image tags), tests/trainer
  and tests/transform (conftest.py's session fixtures run a Beam transform and a training run). A
  unit runs on one worker, so its module and session fixtures are built once, as without xdist.
* Longest first: the image tests, then the end-to-end modules, then the other slow ones, then the
  rest; inside each, the units with the longest `timeout` mark first, then collection order. Both workers then finish at about the same time instead of one
  starting a pipeline run when the other is done.

With `--dist loadscope` the scheduler below sends these units; xdist's own `xdist_group` marks are
not used: with pytest 9.2 `--dist loadgroup` no longer groups (pytest-dev/pytest-xdist#1386).
"""

from __future__ import annotations

import pytest

_RANKS = ("docker", "e2e", "slow")  # earlier: started first

# Folders whose tests are one unit (see above).
WHOLE_FOLDERS = ("tests/docker", "tests/trainer", "tests/transform")


def work_unit(nodeid: str) -> str:
    """The folder in WHOLE_FOLDERS holding the test, else its module (`tests/x/test_y.py`)."""
    module = nodeid.split("::", 1)[0]
    for folder in WHOLE_FOLDERS:
        if module.startswith(folder + "/"):
            return folder
    return module


def _rank(item: pytest.Item) -> int:
    for rank, marker in enumerate(_RANKS):
        if item.get_closest_marker(marker) is not None:
            return rank
    return len(_RANKS)


def _timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    return float(marker.args[0]) if marker is not None and marker.args else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    units = {item.nodeid: work_unit(item.nodeid) for item in items}
    rank: dict[str, int] = {}
    longest: dict[str, float] = {}
    first: dict[str, int] = {}
    for position, item in enumerate(items):
        unit = units[item.nodeid]
        rank[unit] = min(rank.get(unit, len(_RANKS)), _rank(item))
        longest[unit] = max(longest.get(unit, 0.0), _timeout(item))
        first.setdefault(unit, position)
    # Whole units move; inside one the collection order stays (a module's fixtures are set up once).
    items.sort(key=lambda item: (rank[units[item.nodeid]], -longest[units[item.nodeid]], first[units[item.nodeid]]))


@pytest.hookimpl(tryfirst=True)  # before xdist's own (the first answer wins)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadscope` over `work_unit`s, in collection order (Makefile: --no-loadscope-reorder)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)
