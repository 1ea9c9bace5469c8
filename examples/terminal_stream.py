"""A token-by-token terminal UI: the answer streams in with a live status line, then a summary.

Run: python examples/terminal_stream.py ["your question"] [--provider fake]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import anyio

from chatstream import ChatStreamError, create_chat_model
from chatstream.defaults import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chatstream import BaseChatModel

QUESTION = "What is the purpose of model regularization?"


@dataclass
class Stats:
    """What the status and summary lines report (times from `time.perf_counter`)."""

    model: str
    start: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    end: float | None = None
    tokens: int = 0

    def live(self) -> str:
        """The status line while the answer streams."""
        if self.first_token is None:
            return "waiting for the first token..."
        ttft = (self.first_token - self.start) * 1000
        elapsed = time.perf_counter() - self.start
        return f"{self.tokens} tokens | TTFT {ttft:.0f} ms | {elapsed:.1f} s"

    def summary(self) -> str:
        """The last line: tokens, time to first token, total time, rate and model."""
        total = (self.end or time.perf_counter()) - self.start
        ttft = "-" if self.first_token is None else f"{(self.first_token - self.start) * 1000:.1f}"
        rate = self.tokens / total if total > 0 else 0.0
        return (
            f"{self.tokens} tokens | TTFT {ttft} ms | total {total * 1000:.1f} ms "
            f"| {rate:.1f} tokens/s | model {self.model}"
        )


class LiveView:
    """Writes the answer to ``out`` and keeps a status line on ``err`` up to date.

    The status is drawn only when ``err`` is a terminal. When the answer goes to that terminal
    too, the status sits on the line below the answer: drawing it saves the cursor at the
    answer's end (ESC 7), and the next token restores it (ESC 8) and erases below (ESC [J).
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.is_live = err.isatty() and os.environ.get("TERM") != "dumb"
        self._is_shared = self.is_live and out.isatty()
        self._is_drawn = False
        self._column = 0

    def token(self, text: str) -> None:
        """Print the next piece of the answer."""
        self._erase()
        self.out.write(self._wrap(text) if self._is_shared else text)
        self.out.flush()

    def status(self, text: str) -> None:
        """Replace the status line (a no-op when ``err`` is not a terminal)."""
        if not self.is_live:
            return
        self._erase()
        if self._is_shared:
            # IND then RI: a line now exists below (scrolled in if need be) and the column is
            # kept, so the saved position stays the answer's end until the next token.
            self.err.write("\x1bD\x1bM\x1b7\x1bD\r")
        self.err.write(text[: _width()])  # never wraps, so one erase clears it
        self.err.flush()
        self._is_drawn = True

    def close(self) -> None:
        """Erase the status line and end the answer's line."""
        self._erase()
        self.out.write("\n")
        self.out.flush()

    def _erase(self) -> None:
        if self._is_drawn:
            self.err.write("\x1b8\x1b[J" if self._is_shared else "\r\x1b[K")
            self.err.flush()
            self._is_drawn = False

    def _wrap(self, text: str) -> str:
        """Break lines a column short of the margin.

        A terminal that restores a saved cursor forgets a line wrap that was pending there,
        and the next character would overwrite the last one. Wide characters count as two.
        """
        width, pieces = _width(), []
        for char in text:
            cells = 2 if unicodedata.east_asian_width(char) in "WF" else 1
            if char == "\n":
                self._column = 0
            elif self._column + cells > width:
                pieces.append("\n")
                self._column = 0 if char.isspace() else cells
                if char.isspace():
                    continue  # the line break takes the place of the space
            else:
                self._column += cells
            pieces.append(char)
        return "".join(pieces)


def _width() -> int:
    return shutil.get_terminal_size().columns - 1


async def stream_answer(model: BaseChatModel, question: str, view: LiveView, stats: Stats) -> None:
    """Stream the answer into ``view``, counting tokens and timing them in ``stats``."""
    view.status(stats.live())
    try:
        async with model.astream(question) as stream:
            async for chunk in stream:
                stats.model = chunk.response_metadata.get("model_name") or stats.model
                if chunk.text:
                    if stats.first_token is None:
                        stats.first_token = time.perf_counter()
                    stats.tokens += 1
                    view.token(chunk.text)
                    view.status(stats.live())
    finally:
        stats.end = time.perf_counter()


def main(argv: Sequence[str] | None = None) -> int:
    """Ask one question and stream the answer; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("question", nargs="?", default=QUESTION, help="what to ask")
    parser.add_argument("--provider", choices=list(PROVIDERS), help="the provider to use")
    args = parser.parse_args(argv)
    model = create_chat_model(args.provider)
    view = LiveView(sys.stdout, sys.stderr)
    stats = Stats(model.model_name)
    status, problem = 0, ""
    try:
        anyio.run(stream_answer, model, args.question, view, stats)
    except KeyboardInterrupt:  # the stream was cancelled, and closed with it
        status, problem = 130, "stopped"
    except ChatStreamError as exc:  # what arrived before it stays on screen
        status, problem = 1, f"{type(exc).__name__}: {exc}"
    view.close()
    if problem:
        print(f"[{problem}]", file=sys.stderr)
    print(stats.summary(), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
