"""Structured output on the fake model: every method, schema kind, partials, failures."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import BaseModel

from chatstream import OutputParserError, UnsupportedFeatureError
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.testing._conformance_tools import refines

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class Movie(BaseModel):
    """A film."""

    title: str
    year: int
    genres: list[str]


MOVIE = '{"title": "Alien", "year": 1979, "genres": ["horror", "sci-fi"]}'
PIECES = ['{"title": "Al', 'ien", "ye', 'ar": 19', '79, "genres": ["hor', 'ror", "sci', '-fi"]}']
SCHEMA = {
    "title": "movie",
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
}


def _text_model(*answers: str) -> FakeChatModel:
    return FakeChatModel(
        responses=[FakeResponse(chunks=PIECES) if a == MOVIE else a for a in answers]
    )


def _call_model(args: dict[str, Any], name: str = "Movie") -> FakeChatModel:
    call = {"name": name, "args": args, "id": "call_1"}
    return FakeChatModel(responses=[FakeResponse(tool_calls=[call])])


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
async def test_text_methods_return_instances(method: Any) -> None:
    structured = _text_model(MOVIE).with_structured_output(Movie, method=method)
    assert await structured.ainvoke("Alien?") == Movie(
        title="Alien", year=1979, genres=["horror", "sci-fi"]
    )
    sent = structured.model.__dict__["response_format"]
    if method == "json_schema":
        assert sent == {
            "type": "json_schema",
            "json_schema": {
                "name": "Movie",
                "description": "A film.",
                "schema": structured.json_schema,
            },
        }
    else:
        assert sent == {"type": "json_object"}


async def test_tool_calling_forces_the_schema_tool() -> None:
    structured = _call_model({"title": "Alien", "year": 1979, "genres": []}).with_structured_output(
        Movie, method="tool_calling"
    )
    assert (await structured.ainvoke("Alien?")).year == 1979
    assert structured.model.__dict__["tool_choice"] == "Movie"
    assert structured.model.__dict__["parallel_tool_calls"] is False
    assert structured.method == "tool_calling"


async def test_partials_are_monotone_and_end_with_the_object() -> None:
    structured = _text_model(MOVIE).with_structured_output(Movie)
    partials = [partial async for partial in structured.astream("Alien?")]
    assert partials[-1] == {"title": "Alien", "year": 1979, "genres": ["horror", "sci-fi"]}
    assert {"title": "Al"} in partials
    assert len(partials) >= 5
    for earlier, later in itertools.pairwise(partials):
        assert refines(earlier, later)


async def test_dict_schemas_return_dicts() -> None:
    structured = _text_model('{"title": "Alien", "year": 1979}').with_structured_output(SCHEMA)
    assert await structured.ainvoke("x") == {"title": "Alien", "year": 1979}
    wrong = _text_model('{"title": "Alien", "year": "1979"}').with_structured_output(SCHEMA)
    with pytest.raises(OutputParserError, match="year: expected integer"):
        await wrong.ainvoke("x")


async def test_validation_failure_keeps_the_raw_message() -> None:
    structured = _text_model('{"title": "Alien"}').with_structured_output(Movie)
    with pytest.raises(OutputParserError) as caught:
        await structured.ainvoke("x")
    assert caught.value.raw.content == '{"title": "Alien"}'
    assert caught.value.text == '{"title": "Alien"}'
    not_json = _text_model("Sorry, I cannot.").with_structured_output(Movie)
    with pytest.raises(OutputParserError, match="not valid JSON"):
        await not_json.ainvoke("x")
    streamed = _text_model('{"title": "Alien"}').with_structured_output(Movie)
    with pytest.raises(OutputParserError):
        async for _ in streamed.astream("x"):
            pass


async def test_include_raw() -> None:
    good = _text_model(MOVIE).with_structured_output(Movie, include_raw=True)
    result = await good.ainvoke("x")
    assert result["parsed"] == Movie(title="Alien", year=1979, genres=["horror", "sci-fi"])
    assert result["parsing_error"] is None
    assert result["raw"].text == MOVIE
    bad = await _text_model("{").with_structured_output(Movie, include_raw=True).ainvoke("x")
    assert bad["parsed"] is None
    assert isinstance(bad["parsing_error"], OutputParserError)


async def test_a_model_that_does_not_call_the_tool() -> None:
    structured = _text_model("no call").with_structured_output(Movie, method="tool_calling")
    with pytest.raises(OutputParserError, match="did not call"):
        await structured.ainvoke("x")


def test_sync_twins() -> None:
    structured = _text_model(MOVIE).with_structured_output(Movie)
    assert structured.invoke("x").title == "Alien"
    assert list(structured.stream("x"))[-1]["year"] == 1979
    assert [m.year for m in structured.batch(["a", "b"])] == [1979, 1979]


def test_methods_the_provider_lacks_are_refused() -> None:
    anthropic = ChatAnthropic(api_key="x")
    assert anthropic.with_structured_output(Movie).method == "tool_calling"
    for method in ("json_schema", "json_mode"):
        with pytest.raises(UnsupportedFeatureError):
            anthropic.with_structured_output(Movie, method=method)
