"""Typing names that moved into ``typing`` after Python 3.10, imported from one place."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import TypedDict, Unpack, override
else:  # pragma: no cover - exercised on older interpreters only
    # pydantic only accepts typing_extensions.TypedDict before 3.12; it ships with pydantic.
    from typing_extensions import TypedDict, Unpack, override

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
    from typing import NotRequired, Self
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # anyio's own backport dependency
    from typing_extensions import NotRequired, Self

__all__ = [
    "BaseExceptionGroup",
    "NotRequired",
    "Self",
    "TypedDict",
    "Unpack",
    "override",
]
