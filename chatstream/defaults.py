"""`create_chat_model`: which model to use when the caller does not name one.

The order is: the ``provider`` argument, then ``CHATSTREAM_PROVIDER``, then the offline default.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .model import BaseChatModel

__all__ = ["PROVIDERS", "create_chat_model"]

PROVIDERS = ("offline", "fake")
"""Provider names `create_chat_model` accepts."""


def create_chat_model(provider: str | None = None) -> BaseChatModel:
    """Create the model to use: the named provider, else ``CHATSTREAM_PROVIDER``, else offline.

    Providers are imported only when chosen, so unused extras are never loaded.
    """
    name = provider or os.environ.get("CHATSTREAM_PROVIDER") or "offline"
    if name == "offline":
        from .providers.offline import ChatOffline

        return ChatOffline()
    if name == "fake":
        from .providers.fake import FakeChatModel

        return FakeChatModel(responses=["This is a scripted answer from FakeChatModel."])
    where = "provider" if provider else "CHATSTREAM_PROVIDER"
    raise InvalidInputError(
        f"unknown provider {name!r}; choose one of {list(PROVIDERS)}", where=where
    )
