"""The fast-decoder suite (``nox -s fast``): msgspec decodes, and must give the stdlib's answers.

It is left out of the plain run (``collect_ignore`` in tests/conftest.py): it needs the ``fast``
extra, whose absence here is a failure, not a skip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec  # noqa: F401  # the session installs chatstream[fast]: fail loudly without it
import pytest

from chatstream import _json

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def fast_decoder() -> Iterator[None]:
    """Every test starts with msgspec decoding and leaves the process default behind it."""
    _json.set_decoder("msgspec")
    yield
    _json.set_decoder(None)
