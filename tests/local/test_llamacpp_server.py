"""ChatOpenAI against llama-cpp-python's own OpenAI-compatible server: a real peer.

Its known deviations (protocols.md section 5): no usage in streams, a role-only first chunk,
``: ping`` comments, ``json.dumps`` spacing, FastAPI ``{"detail": ...}`` error bodies; and, seen
here, a streaming request that fails after the headers ends with no event at all.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import pytest

from chatstream import AuthenticationError, HumanMessage, StreamInterruptedError, SystemMessage
from chatstream.providers.llamacpp import default_model_path
from chatstream.providers.openai import ChatOpenAI

KEY = "local-server-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    # A file, not a pipe: the server logs a lot while loading and would block on a full pipe.
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                default_model_path(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "512",
                "--api_key",
                KEY,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 50
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"llama_cpp.server did not start: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def model(server: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server, api_key=KEY, model="smollm2", temperature=0, seed=0, max_tokens=16
    )


async def test_streams_text_with_finish_reason_and_no_usage(model: ChatOpenAI) -> None:
    chunks = [c async for c in model.astream("What is the purpose of model regularization?")]
    assert len([c for c in chunks if c.text]) >= 3
    message = await model.ainvoke("What is the purpose of model regularization?")
    assert message.text.strip()
    assert message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata is None  # this server sends no usage in streams
    await model.aclose()


async def test_finish_reasons(model: ChatOpenAI) -> None:
    short = await model.ainvoke("Count to ten.", max_tokens=2)
    natural = await model.ainvoke(
        [SystemMessage("Answer with one word."), HumanMessage("Say yes.")], max_tokens=100
    )
    assert short.response_metadata["finish_reason"] == "length"
    assert natural.response_metadata["finish_reason"] == "stop"
    await model.aclose()


async def test_early_break_and_cancellation_release_the_connection(model: ChatOpenAI) -> None:
    async with model.astream("Tell me a long story.", max_tokens=200) as stream:
        async for _ in stream:
            break
    assert model.pool_stats().in_use == 0
    with anyio.move_on_after(0.3):
        async for _ in model.astream("Tell me another long story.", max_tokens=200):
            pass
    assert model.pool_stats().in_use == 0
    assert (await model.ainvoke("Say hi.", max_tokens=4)).text  # the server still serves
    await model.aclose()


async def test_errors_map_to_our_types(server: str, model: ChatOpenAI) -> None:
    wrong = ChatOpenAI(base_url=server, api_key="wrong-key", model="smollm2", max_retries=0)
    with pytest.raises(AuthenticationError) as info:  # FastAPI's {"detail": "Invalid API key"}
        await wrong.ainvoke("hi")
    assert "Invalid API key" in str(info.value)
    assert "wrong-key" not in str(info.value)
    # A prompt over the context: streaming, this server has already sent 200 and its SSE
    # headers when it fails, and ends the stream with no event at all (seen here; its
    # non-streaming answer is a proper 400). The client must report the cut, not succeed.
    with pytest.raises(StreamInterruptedError, match="cut short") as cut:
        await model.ainvoke("word " * 2000)
    assert cut.value.partial is None
    await wrong.aclose()
    await model.aclose()


def test_sync_api(model: ChatOpenAI) -> None:
    assert "".join(c.text for c in model.stream("Say hello.", max_tokens=6)).strip()
    model.close()
