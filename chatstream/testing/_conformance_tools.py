"""The conformance cases for tools and structured output, part of `ChatModelConformance`.

Kept apart so that each module stays readable; every provider runs them through the suite.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from pydantic import BaseModel

from chatstream.errors import BadRequestError, OutputParserError, UnsupportedFeatureError
from chatstream.messages import AIMessage, AIMessageChunk, ToolMessage
from chatstream.tools import partial_tool_calls, tool

from ._script import Faults, ScriptedReply, ScriptedToolCall

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from chatstream.model import BaseChatModel

    from ._base import LocalServer
    from .conformance import Capabilities, ProviderHarness

__all__ = ["ToolConformance", "refines"]


class Weather(BaseModel):
    """The weather in a city."""

    city: str


def get_time(tz: Annotated[str, "An IANA time zone"]) -> str:
    """The time in a time zone."""
    raise RuntimeError("the clock is broken")


@tool
async def get_news(topic: str) -> str:
    """Headlines about a topic.

    Args:
        topic: What the news is about.
    """
    return f"Nothing new about {topic}."


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18C and sunny in {city}"


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
SEARCH = {
    "name": "search",
    "description": "Search the web.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}


class CityInfo(BaseModel):
    """Facts about a city."""

    city: str
    temperature: int


CITY_JSON = ['{"city": "Pa', 'ris", "tem', 'perature": 1', "8}"]
CALLS = ScriptedReply(
    tool_calls=[
        ScriptedToolCall(
            id="call_a", name="get_weather", argument_chunks=['{"city": "Pa', 'ris"}']
        ),
        ScriptedToolCall(id="call_b", name="get_time", argument_chunks=['{"tz": ', '"CET"}']),
    ],
    finish_reason="tool_calls",
)
ANSWER = ScriptedReply(text_chunks=["It is ", "18C."])


def refines(earlier: Any, later: Any) -> bool:
    """Whether ``later`` only adds to ``earlier``: keys, list items, string characters."""
    if isinstance(earlier, dict):
        return isinstance(later, dict) and all(
            key in later and refines(value, later[key]) for key, value in earlier.items()
        )
    if isinstance(earlier, list):
        return (
            isinstance(later, list)
            and len(earlier) <= len(later)
            and all(refines(a, b) for a, b in zip(earlier, later, strict=False))
        )
    if isinstance(earlier, str):
        return isinstance(later, str) and later.startswith(earlier)
    return bool(earlier == later)


def _capabilities(harness: ProviderHarness) -> Capabilities:
    from .conformance import capabilities_of  # the suite's module imports this one

    return capabilities_of(harness)


class ToolConformance:
    """Tools and structured output, for every provider."""

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

    async def test_tools_bind_from_every_kind(self, harness: ProviderHarness) -> None:
        """A pydantic model, functions, a ``@tool`` and raw OpenAI and Anthropic dicts bind."""
        async with self.running(harness, [CALLS]) as (server, model):
            bound = model.bind_tools([Weather, get_time, get_news, LOOKUP, SEARCH])
            message = await bound.ainvoke("Weather?")
            assert "tools" not in (model.model_dump().get("tools") or [])  # unchanged
        [request] = harness.received(server)
        assert [t["name"] for t in request.tools] == [
            "Weather",
            "get_time",
            "get_news",
            "lookup",
            "search",
        ]
        schemas = {t["name"]: t for t in request.tools}
        assert schemas["Weather"]["parameters"]["properties"] == {"city": {"type": "string"}}
        assert schemas["Weather"]["description"] == "The weather in a city."
        tz = schemas["get_time"]["parameters"]["properties"]["tz"]
        assert tz == {"type": "string", "description": "An IANA time zone"}
        topic = schemas["get_news"]["parameters"]["properties"]["topic"]
        assert topic["description"] == "What the news is about."
        assert schemas["search"]["description"] == "Search the web."
        assert [call["name"] for call in message.tool_calls] == ["get_weather", "get_time"]

    @pytest.mark.parametrize("choice", ["required", "get_time", "none"])
    async def test_forced_tool_choice(self, harness: ProviderHarness, choice: str) -> None:
        """A forced choice reaches the wire; one the provider cannot honour is refused."""
        capabilities = _capabilities(harness)
        async with self.running(harness, [CALLS]) as (server, model):
            kind = choice if choice in ("required", "none") else "named"
            if kind not in capabilities.tool_choices:
                with pytest.raises(UnsupportedFeatureError) as caught:
                    model.bind_tools([get_time], tool_choice=choice)
                assert caught.value.where == "tool_choice"
                return
            await model.bind_tools([get_time], tool_choice=choice).ainvoke("Time?")
        [request] = harness.received(server)
        assert request.tool_choice == choice

    async def test_one_tool_call_at_a_time(self, harness: ProviderHarness) -> None:
        """``parallel_tool_calls=False`` reaches the wire, or is refused as unsupported."""
        async with self.running(harness, [CALLS]) as (server, model):
            if not _capabilities(harness).parallel_tool_switch:
                with pytest.raises(UnsupportedFeatureError):
                    model.bind_tools([get_time], parallel_tool_calls=False)
                return
            await model.bind_tools([get_time], parallel_tool_calls=False).ainvoke("Time?")
        [request] = harness.received(server)
        assert request.parallel_tool_calls is False

    async def test_parallel_calls_merge_by_index_with_live_arguments(
        self, harness: ProviderHarness
    ) -> None:
        """Interleaved fragments of two calls merge by index; partial arguments only grow."""
        faults = Faults(interleave_tool_calls=True)
        capabilities = _capabilities(harness)
        async with self.running(harness, [CALLS], faults) as (_, model):
            chunks = [c async for c in model.bind_tools([get_weather, get_time]).astream("Go")]
        order = [f["index"] for chunk in chunks for f in chunk.tool_call_chunks]
        if capabilities.interleaved_tool_arguments:
            assert order[:4] == [0, 1, 0, 1]  # arrived interleaved
        so_far = chunks[0]
        seen: list[list[dict[str, Any]]] = []
        for chunk in chunks[1:]:
            so_far = so_far + chunk
            seen.append([call["args"] for call in partial_tool_calls(so_far)])
        for earlier, later in itertools.pairwise(seen):
            assert refines(earlier, later)
        if capabilities.streamed_tool_arguments:
            assert [{"city": "Pa"}] in seen or any(s[:1] == [{"city": "Pa"}] for s in seen)
        message = so_far.to_message()
        served = capabilities.tool_call_id
        assert message.tool_calls == [
            {"name": "get_weather", "args": {"city": "Paris"}, "id": served("call_a")},
            {"name": "get_time", "args": {"tz": "CET"}, "id": served("call_b")},
        ]

    async def test_tool_round_trip(self, harness: ProviderHarness) -> None:
        """Calls run, results (a failure too) go back on the wire, and the loop ends."""
        served = _capabilities(harness).tool_call_id
        async with self.running(harness, [CALLS, ANSWER]) as (server, model):
            added = await model.bind_tools([get_weather, get_time]).tool_loop().ainvoke("Go")
        assert [type(m) for m in added] == [AIMessage, ToolMessage, ToolMessage, AIMessage]
        weather, failed = added[1], added[2]
        assert isinstance(weather, ToolMessage)
        assert isinstance(failed, ToolMessage)
        assert (weather.content, weather.status) == ("18C and sunny in Paris", "success")
        assert failed.status == "error"
        assert failed.content == "Error: RuntimeError: the clock is broken"
        assert added[-1].content == "It is 18C."
        _, second = harness.received(server)
        assert second.messages[-3:] == [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": served("call_a"), "name": "get_weather", "args": {"city": "Paris"}},
                    {"id": served("call_b"), "name": "get_time", "args": {"tz": "CET"}},
                ],
            },
            {"role": "tool", "content": weather.content, "tool_call_id": served("call_a")},
            {"role": "tool", "content": failed.content, "tool_call_id": served("call_b")},
        ]
        raw = server.requests[1].raw_body
        assert b"18C and sunny in Paris" in raw
        assert served("call_b").encode() in raw

    @pytest.mark.parametrize("method", ["json_schema", "tool_calling", "json_mode"])
    async def test_structured_output(self, harness: ProviderHarness, method: Any) -> None:
        """Each method returns an instance; streamed partials only refine one another."""
        capabilities = _capabilities(harness)
        async with self.running(harness) as (server, model):
            if method not in capabilities.structured_methods:
                with pytest.raises(UnsupportedFeatureError):
                    model.with_structured_output(CityInfo, method=method)
                return
        if method == "tool_calling":
            call = ScriptedToolCall(id="call_s", name="CityInfo", argument_chunks=CITY_JSON)
            reply = ScriptedReply(tool_calls=[call], finish_reason="tool_calls")
        else:
            reply = ScriptedReply(text_chunks=CITY_JSON)
        async with self.running(harness, [reply]) as (server, model):
            structured = model.with_structured_output(CityInfo, method=method)
            prompt = "Answer in JSON: the weather in Paris?"
            partials = [partial async for partial in structured.astream(prompt)]
            answer = await structured.ainvoke(prompt)
        assert answer == CityInfo(city="Paris", temperature=18)
        assert partials[-1] == {"city": "Paris", "temperature": 18}
        assert len(partials) > 2
        for earlier, later in itertools.pairwise(partials):
            assert refines(earlier, later), (earlier, later)
        request = harness.received(server)[0]
        schema = structured.json_schema
        if method == "json_schema":
            assert request.output_format == schema
        elif method == "json_mode":
            assert request.output_format == "json"
        else:
            assert [t["parameters"] for t in request.tools] == [schema]
            assert request.tool_choice in ("CityInfo", "required")

    async def test_structured_output_that_does_not_validate(self, harness: ProviderHarness) -> None:
        """A wrong answer raises `OutputParserError` with the message, or comes back raw."""
        reply = ScriptedReply(text_chunks=['{"city": ', "5}"])
        call = ScriptedToolCall(id="call_s", name="CityInfo", argument_chunks=['{"city": 5}'])
        async with self.running(harness) as (_, model):
            method = model.with_structured_output(CityInfo).method
        if method == "tool_calling":
            reply = ScriptedReply(tool_calls=[call], finish_reason="tool_calls")
        async with self.running(harness, [reply]) as (_, model):
            with pytest.raises(OutputParserError) as caught:
                await model.with_structured_output(CityInfo).ainvoke("Paris?")
            result = await model.with_structured_output(CityInfo, include_raw=True).ainvoke("P?")
        assert isinstance(caught.value.raw, AIMessage)
        assert "city" in caught.value.text
        assert result["parsed"] is None
        assert isinstance(result["parsing_error"], OutputParserError)
        assert isinstance(result["raw"], AIMessage)

    async def test_a_schema_the_provider_rejects(self, harness: ProviderHarness) -> None:
        """Tool parameters that are not an object schema are refused by the API: 400."""
        if not _capabilities(harness).rejects_non_object_tool_parameters:
            pytest.skip("this API takes any parameters schema (its own test covers a refusal)")
        bad = {
            "type": "function",
            "function": {"name": "tags", "parameters": {"type": "array", "items": {}}},
        }
        async with self.running(harness) as (_, model):
            with pytest.raises(BadRequestError) as caught:
                await model.bind_tools([bad]).ainvoke("Tags?")
        assert "object" in caught.value.message

    async def test_tool_calls_show_in_the_run_log_as_they_grow(
        self, harness: ProviderHarness
    ) -> None:
        """Each tool-call fragment is a ``/streamed_output`` patch of the run log."""
        async with self.running(harness, [CALLS]) as (_, model):
            patches = [p async for p in model.bind_tools([get_weather]).astream_log("Go")]
        added = [
            op["value"]
            for patch in patches
            for op in patch.ops
            if op["path"] == "/streamed_output/-"
        ]
        fragments = [
            f
            for value in added
            for f in (
                value.tool_call_chunks
                if isinstance(value, AIMessageChunk)
                else value.get("tool_call_chunks") or []
            )
        ]
        assert {f["index"] for f in fragments} == {0, 1}
        assert len(fragments) >= 2
