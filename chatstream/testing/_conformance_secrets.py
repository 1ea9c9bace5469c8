"""The secrets cases of the conformance suite: no key reaches a repr, dump, error, log or trace.

`ChatModelConformance` inherits them; they use its ``running`` helper and harness.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from chatstream.errors import AuthenticationError, ProviderError

from ._script import Faults, ScriptedReply

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from chatstream.model import BaseChatModel

    from ._base import LocalServer
    from .conformance import ProviderHarness

__all__ = ["HELLO", "SECRET", "SecretsConformance"]

SECRET = "sk-conformance-0123456789-secret-key"
"""A key no error, repr or log may show."""

HELLO = ScriptedReply(  # the suite's usual answer
    text_chunks=["Hello", ",", " world", "!"], usage={"prompt_tokens": 7, "completion_tokens": 4}
)


class SecretsConformance:
    """Secrets, for every provider."""

    def running(
        self,
        harness: ProviderHarness,
        replies: Any = ...,
        faults: Faults | None = None,
        *,
        api_key: str = ...,
        **settings: Any,
    ) -> AbstractAsyncContextManager[tuple[LocalServer, BaseChatModel]]:
        """A started server and a model pointed at it (provided by the suite)."""
        raise NotImplementedError

    async def test_no_api_key_in_errors_reprs_or_logs(
        self, harness: ProviderHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The key appears in no error, repr, dump or log line."""
        caplog.set_level(logging.DEBUG)
        async with self.running(harness, api_key=SECRET, max_retries=1) as (server, model):
            with pytest.raises(AuthenticationError) as refused:
                await model.ainvoke("Hi")
            server.script(faults=Faults(http_error=503, headers={"retry-after-ms": "1"}))
            with pytest.raises(ProviderError) as failed:
                await model.ainvoke("Hi")
            shown = [repr(model), str(model), model.model_dump_json()]
        for error in (refused.value, failed.value):
            shown += [str(error), repr(error), repr(error.body), repr(vars(error))]
            shown += [str(error.__cause__), repr(error.__cause__)]
        shown.append(caplog.text)
        from .conformance import capabilities_of  # the suite's module imports this one

        header = capabilities_of(harness).credential_header
        assert server.requests[0].headers[header].endswith(SECRET)  # it was sent
        for text in shown:
            assert SECRET not in text
            assert SECRET[8:-8] not in text

    async def test_a_canary_key_reaches_no_sink(
        self,
        harness: ProviderHarness,
        caplog: pytest.LogCaptureFixture,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A canary key shows in no repr, dump, error, log, run log or trace.

        It is given three ways (the key, a header, URL userinfo) and echoed by the server in
        an error event inside a 200 stream.
        """
        from chatstream.tracing import flush  # imported here: tracing is an optional sink

        caplog.set_level(logging.DEBUG)
        db = tmp_path / "traces.db"
        monkeypatch.setenv("CHATSTREAM_TRACING", "true")
        monkeypatch.setenv("CHATSTREAM_TRACE_DB", str(db))
        echo = Faults(
            error_event_after=2,
            error_event={
                "type": "server_error",
                "message": f"bad key {SECRET} (x-custom {SECRET})",
            },
        )
        async with harness.server([HELLO], echo, api_key=SECRET) as server:
            sent = harness.model(server.base_url, SECRET)
            userinfo = server.base_url.replace("://", f"://user:{SECRET}@", 1)
            fields = {**sent.__dict__, "base_url": userinfo}
            fields["default_headers"] = {"X-Custom-Token": SECRET}
            for name in ("tags", "metadata", "callbacks"):
                fields.pop(name)
            async with type(sent)(**fields) as model:
                patches: list[Any] = []

                async def consume() -> None:
                    async for patch in model.astream_log("Hi"):
                        patches.append(patch.to_json())

                with pytest.raises(ProviderError) as echoed:
                    await consume()
                shown = [repr(model), str(model), model.model_dump_json(), str(model.model_dump())]
        assert any(request.headers.get("x-custom-token") == SECRET for request in server.requests)
        error = echoed.value
        assert error.partial is not None  # the output before the error was kept
        shown += [str(error), repr(error), repr(error.body), repr(vars(error)), repr(patches)]
        shown.append(caplog.text)
        assert await anyio.to_thread.run_sync(flush)

        def stored() -> list[str]:  # the database, its WAL and shared-memory files
            return [path.read_bytes().decode("utf-8", "replace") for path in db.parent.iterdir()]

        shown += await anyio.to_thread.run_sync(stored)
        for text in shown:
            assert SECRET not in text
            assert SECRET[8:-8] not in text
