"""Ray Data tests: collected only in ``nox -s ray``, which sets ``CHATSTREAM_RAY_TESTS=1``.

The main suite must not import Ray (nor need it installed), so this file imports it only
inside the fixtures, and without the variable no test module here is even imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

collect_ignore_glob = [] if os.environ.get("CHATSTREAM_RAY_TESTS") == "1" else ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here not in item.path.parents:
            continue  # this hook sees the whole session's items
        # Ray warns about its own internals (deprecations it triggers itself); a warning it
        # attributes to our code still fails the test, as everywhere else.
        item.add_marker(pytest.mark.filterwarnings("ignore:::ray"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A small local Ray cluster for the whole session: 2 CPUs, no dashboard."""
    import ray

    ray.init(
        num_cpus=2,
        # Loopback only: older Ray finds the node's address by connecting towards 8.8.8.8,
        # which pytest-socket refuses (and the tests need no other host).
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        configure_logging=False,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield {"address": ray.get_runtime_context().gcs_address}
    finally:
        ray.shutdown()
