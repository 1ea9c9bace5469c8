"""The example web chat in headless Chromium: tokens render as they stream; Stop cancels the run.

Needs the playwright package and Debian's chromium (never the download of `playwright install`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import jsonpatch
import pytest

pytest.importorskip(
    "playwright.async_api", reason="the browser tests need playwright (pip install playwright)"
)
from playwright.async_api import Page, async_playwright, expect

from chatstream import RateLimitError
from chatstream.providers.fake import FakeChatModel, FakeResponse, split_tokens
from chatstream.transport.sse import SSEDecoder
from chatstream.web import ReplayStore
from examples.aiohttp_backend import create_app, open_site

from .conftest import Tracked

CHROMIUM = shutil.which("chromium")
# Skipped on a developer machine without Chromium; never in CI, which installs it and where a
# missing browser must fail loudly instead of passing quietly.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="the browser tests need Chromium on PATH (apt-get install chromium)",
    ),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER = (
    "Streaming lets a reader watch the answer grow word by word instead of waiting for the "
    "whole reply, and a stop button can end it early."
)
QUESTION = "Why stream an answer?"
READ_ANSWER = """() => {
    const answer = document.querySelector("#answer");
    return [answer.dataset.state, answer.textContent, Number(answer.dataset.patches)];
}"""


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def ask(page: Page, base: str) -> None:
    await page.goto(f"{base}/")
    await page.get_by_label("Your question").fill(QUESTION)
    await page.get_by_role("button", name="Send").click()


async def read_answer(page: Page) -> tuple[str, str, int]:
    """The answer's state, text and patch count, read at one instant."""
    state, text, patches = await page.evaluate(READ_ANSWER)
    return state, text, patches


def final_text(events: list[bytes]) -> str:
    """The final output of a run, rebuilt from its SSE patch events."""
    decoder = SSEDecoder()
    state: Any = {}
    for event in (e for data in events for e in decoder.feed(data)):
        state = jsonpatch.apply_patch(state, json.loads(event.data))
    return str(state["final_output"]["generations"][0][0]["text"])


async def test_tokens_render_as_they_arrive(page: Page) -> None:
    store = ReplayStore()
    model = FakeChatModel(responses=[ANSWER], delay=0.03)
    async with open_site(create_app(model, store=store)) as base:
        await ask(page, base)
        samples: list[str] = []
        with anyio.fail_after(10):
            while (current := await read_answer(page))[0] == "streaming":
                samples.append(current[1])
                await anyio.sleep(0.01)
        state, text, patches = current
        run_id = await page.get_attribute("#answer", "data-run-id")

    assert state == "done"
    assert text == ANSWER
    # Each sample extends the one before, and several partial answers were on screen.
    assert all(after.startswith(before) for before, after in itertools.pairwise(samples))
    partial = sorted({len(sample) for sample in samples} - {0, len(ANSWER)})
    assert len(partial) >= 3, samples
    # The page applied every patch the server sent, and shows the run's final output.
    replay = store.get(run_id or "")
    assert replay is not None
    assert patches == len(replay.patches)
    assert final_text([event for _, event in replay.patches]) == text
    await expect(page.get_by_role("status")).to_have_text(
        f"Done: {len(split_tokens(ANSWER))} tokens, {patches} patches."
    )


async def test_stop_aborts_the_request_and_the_server_cancels_the_run(
    page: Page, tracked: Tracked
) -> None:
    tracked.pieces = split_tokens(ANSWER)
    tracked.pause = 0.03
    async with open_site(create_app(tracked)) as base:
        await ask(page, base)
        shown = "".join(tracked.pieces[:3])
        with anyio.fail_after(10):
            while not (await read_answer(page))[1].startswith(shown):
                await anyio.sleep(0.01)
        tracked.pause = 30  # from now on only a cancellation ends the model's stream
        await page.get_by_role("button", name="Stop").click()

        answer = page.locator("#answer")
        await expect(answer).to_have_attribute("data-state", "stopped")
        await expect(page.get_by_role("status")).to_contain_text("Stopped after")
        await expect(page.get_by_role("button", name="Send")).to_be_enabled()
        await expect(page.get_by_role("button", name="Stop")).to_be_disabled()
        with anyio.fail_after(5):
            while tracked.closed == 0:
                await anyio.sleep(0.01)
        assert tracked.started == 1 and tracked.finished == 0 and tracked.active == 0
        _, text, _ = await read_answer(page)
    assert shown in text and len(text) < len(ANSWER)


async def test_a_model_error_shows_with_the_partial_answer(page: Page) -> None:
    failing = FakeResponse(text=ANSWER, error=RateLimitError("slow down"), error_after=4)
    async with open_site(create_app(FakeChatModel(responses=[failing]))) as base:
        await ask(page, base)
        await expect(page.locator("#answer")).to_have_attribute("data-state", "error")
        await expect(page.get_by_role("status")).to_have_text("Error: slow down")
        _, text, _ = await read_answer(page)
    assert text == "".join(split_tokens(ANSWER)[:4])


# Streams of server-sent events that exercise the parser: line ends, BOM, comments, fields
# without a colon or value, ids, events with no data, UTF-8, and a last event left unfinished.
SSE_STREAMS = [
    b"data: one\n\n",
    b"\xef\xbb\xbfdata: bom\r\n\r\n",
    b"event: patch\rid: 7\rdata: a\rdata:b\r\rdata: c\r\n\r\n",
    b": keep-alive\ndata\n\nid: 3\nevent: lost\n\ndata:  two spaces\r\nid\r\n\r\n",
    "data: é 😀 ünïcode\nid: 9\u00e9\n\n".encode(),
    b"retry: 10\nfoo: bar\nid: a\0b\ndata: x\n\nevent: e\ndata: never ended",
]


async def test_the_sse_parser_agrees_with_chatstream_at_every_split(page: Page) -> None:
    cases: list[list[list[int]]] = []
    expected: list[list[list[str]]] = []
    for stream in SSE_STREAMS:
        events = SSEDecoder().feed(stream)
        want = [[event.event, event.data, event.id or ""] for event in events]
        for cut in range(len(stream) + 1):
            cases.append([list(stream[:cut]), list(stream[cut:])])
            expected.append(want)
        cases.append([[byte] for byte in stream])  # one byte at a time
        expected.append(want)

    async with open_site(create_app(FakeChatModel(responses=["x"]))) as base:
        await page.goto(f"{base}/")
        got = await page.evaluate(
            """async (cases) => {
                const { SSEParser } = await import("./app.js");
                return cases.map((chunks) => {
                    const parser = new SSEParser();
                    return chunks
                        .flatMap((chunk) => parser.feed(new Uint8Array(chunk)))
                        .map((event) => [event.type, event.data, event.id]);
                });
            }""",
            cases,
        )
    assert got == expected
