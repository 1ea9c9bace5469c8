"""Tools for testing code that uses chatstream: a scripted model and local protocol servers.

`FakeChatModel` answers from a script without any network, for unit tests of your own chains
and handlers. `OpenAIServer`, `AnthropicServer` and `OllamaServer` speak the real wire protocols
on ``127.0.0.1`` (a free port), so HTTP-level behaviour (streaming, errors, retries,
disconnects) runs over a real socket; `ScriptedReply` says what they answer, `Faults` how they
misbehave, and `RecordedRequest` is what they saw. The servers are async context managers;
`serve_in_thread` runs one on a background thread for sync tests.

Example:
    >>> from chatstream.providers.openai import ChatOpenAI
    >>> from chatstream.testing import OpenAIServer, ScriptedReply, serve_in_thread
    >>> with serve_in_thread(OpenAIServer([ScriptedReply.from_text("Hello!")])) as server:
    ...     model = ChatOpenAI(base_url=server.base_url, api_key="test")
    ...     model.invoke("hi").content
    'Hello!'

Importing this package starts nothing. The provider conformance suite needs pytest and is
imported by path: ``from chatstream.testing.conformance import ChatModelConformance``.
"""

from __future__ import annotations

from chatstream.providers.fake import FakeChatModel as FakeChatModel
from chatstream.providers.fake import FakeResponse as FakeResponse

from ._base import RecordedRequest as RecordedRequest
from ._script import Faults as Faults
from ._script import ScriptedReply as ScriptedReply
from ._script import ScriptedToolCall as ScriptedToolCall
from ._threaded import serve_in_thread as serve_in_thread
from .anthropic_server import AnthropicServer as AnthropicServer
from .ollama_server import OllamaServer as OllamaServer
from .openai_server import OpenAIServer as OpenAIServer

__all__ = [
    "AnthropicServer",
    "FakeChatModel",
    "FakeResponse",
    "Faults",
    "OllamaServer",
    "OpenAIServer",
    "RecordedRequest",
    "ScriptedReply",
    "ScriptedToolCall",
    "serve_in_thread",
]
