"""Tools and structured output with real local peers: SmolLM2 in process under llama.cpp's
grammars, and llama-cpp-python's own OpenAI-compatible server forcing a tool call.

The model is tiny: these tests assert that answers are valid (schema, tool name, argument
types), never what they say.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from chatstream import UnsupportedFeatureError
from chatstream.providers.llamacpp import ChatLlamaCpp
from chatstream.providers.openai import ChatOpenAI

from .test_llamacpp_server import KEY
from .test_llamacpp_server import server as server  # the module-scoped real server

pytestmark = pytest.mark.anyio


class Pet(BaseModel):
    """A pet."""

    name: str = Field(max_length=16)
    kind: Literal["cat", "dog", "bird"]
    age: int
    vaccinated: bool


def get_weather(city: Annotated[str, "The city's name"]) -> str:
    """The current weather in a city."""
    return "18C and sunny"


@pytest.fixture(scope="module")
def local() -> ChatLlamaCpp:
    return ChatLlamaCpp(temperature=0, seed=0, max_tokens=64)


@pytest.mark.parametrize("method", ["json_schema", "tool_calling"])
async def test_structured_output_is_schema_valid_under_the_grammar(
    local: ChatLlamaCpp, method: str
) -> None:
    structured = local.with_structured_output(Pet, method=method)  # type: ignore[call-overload]
    partials = [p async for p in structured.astream("Describe Tom, a 3 year old cat.")]
    pet = await structured.ainvoke("Describe Rex, a dog.")
    assert isinstance(pet, Pet)  # validated: the grammar allowed nothing else
    if method == "json_schema":
        assert Pet.model_validate(partials[-1])


async def test_json_mode_answers_a_json_object(local: ChatLlamaCpp) -> None:
    message = await local.ainvoke(
        "Give me a JSON object about Paris.", response_format={"type": "json_object"}, max_tokens=48
    )
    if message.response_metadata["finish_reason"] == "stop":
        assert isinstance(json.loads(message.text), dict)
    else:  # cut by max_tokens: still a JSON prefix
        assert message.text.lstrip().startswith("{")


async def test_a_forced_tool_call_has_valid_arguments(local: ChatLlamaCpp) -> None:
    bound = local.bind_tools([get_weather], tool_choice="get_weather")
    message = await bound.ainvoke("What is the weather in Paris?")
    [call] = message.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"]["city"], str)
    assert message.response_metadata["finish_reason"] == "tool_calls"
    unforced = local.bind_tools([get_weather])  # "auto" cannot be a grammar: said at the call
    with pytest.raises(UnsupportedFeatureError):
        await unforced.ainvoke("x")


async def test_the_real_server_forces_a_tool_call(server: str) -> None:
    model = ChatOpenAI(base_url=server, api_key=KEY, model="smollm2", temperature=0, max_tokens=64)
    async with model:
        message = await model.bind_tools([get_weather], tool_choice="get_weather").ainvoke(
            "What is the weather in Paris?"
        )
    [call] = message.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"].get("city"), str)
