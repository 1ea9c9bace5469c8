"""Tools: schemas from every kind, binding (immutably, with typed refusals), running, the loop."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import pytest
from pydantic import BaseModel, Field

from chatstream import (
    AIMessage,
    AIMessageChunk,
    InputTypeError,
    InvalidInputError,
    StepLimitError,
    ToolMessage,
    UnsupportedFeatureError,
    arun_tools,
    partial_tool_calls,
    run_tools,
    tool,
    trace,
)
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.providers.llamacpp import ChatLlamaCpp
from chatstream.providers.ollama import ChatOllama
from chatstream.runlog import LogTracker, RunLog
from chatstream.tools import Tool, as_tool, strict_schema

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class Address(BaseModel):
    """Where someone lives."""

    street: str
    number: int = Field(ge=1, description="House number")


def add(a: int, b: Annotated[int, "The second term"] = 1) -> int:
    """Add two numbers.

    Args:
        a: The first term,
            on two lines.
        b: Overridden by the annotation.
    """
    return a + b


@tool(name="shout", description="Upper-case a text.")
async def loud(text: str) -> str:
    return text.upper()


def fails(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def _call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def test_function_schema_from_signature_and_docstring() -> None:
    made = as_tool(add)
    assert made.name == "add"
    assert made.description == "Add two numbers."
    assert made.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first term, on two lines."},
            "b": {"type": "integer", "description": "The second term", "default": 1},
        },
        "required": ["a"],
    }
    assert made(2, 3) == 5  # a tool still calls as its function


def test_every_kind_of_tool() -> None:
    assert as_tool(Address).parameters["required"] == ["street", "number"]
    assert as_tool(Address).description == "Where someone lives."
    assert (loud.name, loud.description) == ("shout", "Upper-case a text.")
    raw = {"name": "s", "input_schema": {"type": "object", "properties": {}}}
    assert as_tool(raw).to_openai() == {
        "type": "function",
        "function": {"name": "s", "parameters": {"type": "object", "properties": {}}},
    }
    openai = {"type": "function", "function": {"name": "o", "strict": True}}
    assert as_tool(openai).strict is True
    with pytest.raises(InputTypeError):
        as_tool(42)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        as_tool({"description": "no name"})


def test_strict_schema_closes_every_object() -> None:
    schema = strict_schema(as_tool(Address).parameters)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["street", "number"]
    assert "default" not in schema["properties"]["number"]


def test_bind_tools_returns_a_new_model() -> None:
    model = FakeChatModel(responses=["hi"])
    bound = model.bind_tools([add, loud], tool_choice="add", parallel_tool_calls=False)
    assert model.tools is None
    assert [t["function"]["name"] for t in bound.tools or []] == ["add", "shout"]
    assert (bound.tool_choice, bound.parallel_tool_calls) == ("add", False)


def test_bind_tools_refuses_what_the_provider_cannot_honour() -> None:
    ollama = ChatOllama()
    with pytest.raises(UnsupportedFeatureError) as caught:
        ollama.bind_tools([add], tool_choice="required")
    assert caught.value.where == "tool_choice"
    with pytest.raises(UnsupportedFeatureError):
        ollama.bind_tools([add], parallel_tool_calls=False)
    with pytest.raises(UnsupportedFeatureError):
        ollama.bind_tools([add], strict=True)
    assert ollama.bind_tools([add], tool_choice="auto").tools
    with pytest.raises(UnsupportedFeatureError):
        ChatLlamaCpp().bind_tools([add], tool_choice="auto")
    with pytest.raises(InvalidInputError):
        FakeChatModel().bind_tools([add], tool_choice="missing")
    with pytest.raises(InvalidInputError):
        FakeChatModel().bind_tools([add, add])


async def test_run_tools_sync_async_and_failures() -> None:
    message = AIMessage(
        "",
        tool_calls=[
            {"name": "add", "args": {"a": 2, "b": 3}, "id": "c1"},
            {"name": "shout", "args": {"text": "hi"}, "id": "c2"},
            {"name": "fails", "args": {"reason": "boom"}, "id": "c3"},
            {"name": "add", "args": {"a": "two"}, "id": "c4"},
            {"name": "nope", "args": {}, "id": "c5"},
        ],
        invalid_tool_calls=[{"name": "add", "args": '{"a": ', "id": "c6", "error": "bad JSON"}],
    )
    results = await arun_tools(message, [add, loud, fails])
    assert [(r.tool_call_id, r.status) for r in results] == [
        ("c1", "success"),
        ("c2", "success"),
        ("c3", "error"),
        ("c4", "error"),
        ("c5", "error"),
        ("c6", "error"),
    ]
    assert [r.content for r in results[:3]] == ["5", "HI", "Error: RuntimeError: boom"]
    assert "a: Input should be a valid integer" in str(results[3].content)
    assert "no tool named 'nope'" in str(results[4].content)
    assert results[0].name == "add"


async def test_a_tool_without_a_function_reports_an_error() -> None:
    [result] = await arun_tools(_call("Address", {"street": "x"}, "c1"), [Address])
    assert result.status == "error"
    assert "no function" in str(result.content)


def test_run_tools_sync_twin() -> None:
    [result] = run_tools(_call("add", {"a": 1}, "c1"), [add])
    assert result == ToolMessage("2", tool_call_id="c1", name="add")


async def test_partial_tool_calls_show_arguments_as_they_grow() -> None:
    model = FakeChatModel(
        responses=[FakeResponse(tool_calls=[{"name": "add", "args": {"a": 1, "b": 22}, "id": "c"}])]
    )
    so_far: AIMessageChunk | None = None
    views = []
    async for chunk in model.astream("Add"):
        so_far = chunk if so_far is None else so_far + chunk
        views.append(partial_tool_calls(so_far))
    seen = [view[0]["args"] for view in views if view]
    assert seen[0] == {}
    assert {"a": 1} in seen
    assert seen[-1] == {"a": 1, "b": 22}
    assert views[-1][0]["name"] == "add"


def _loop_model(*replies: str | FakeResponse) -> FakeChatModel:
    return FakeChatModel(responses=list(replies))


CALL_ADD = FakeResponse(tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "c1"}])


async def test_the_loop_streams_every_step_and_ends_with_the_answer() -> None:
    model = _loop_model(CALL_ADD, "It is 4.").bind_tools([add])
    events = [event async for event in model.tool_loop().astream("2 + 2?")]
    kinds = [type(event).__name__ for event in events]
    assert kinds[-1] == "AIMessage"
    assert "ToolMessage" in kinds
    assert kinds.index("ToolMessage") > kinds.index("AIMessage")
    added = await _loop_model(CALL_ADD, "It is 4.").bind_tools([add]).tool_loop().ainvoke("2+2")
    assert [m.type for m in added] == ["ai", "tool", "ai"]
    assert added[1].content == "4"
    assert added[-1].content == "It is 4."


def test_the_loop_sync_twins() -> None:
    added = _loop_model(CALL_ADD, "4").bind_tools([add]).tool_loop().invoke("2+2")
    assert [m.type for m in added] == ["ai", "tool", "ai"]
    events = list(_loop_model(CALL_ADD, "4").bind_tools([add]).tool_loop().stream("2+2"))
    assert isinstance(events[-1], AIMessage)


async def test_the_loop_is_bounded() -> None:
    model = _loop_model(CALL_ADD).bind_tools([add])
    with pytest.raises(StepLimitError) as caught:
        await model.tool_loop(max_steps=2).ainvoke("forever")
    assert [m.type for m in caught.value.messages] == ["human", "ai", "tool", "ai", "tool"]


async def test_each_step_is_a_child_run_in_the_run_log() -> None:
    model = _loop_model(CALL_ADD, "4").bind_tools([add])
    tracker = LogTracker()
    with trace("outer") as root:
        root.observers.insert(0, tracker)
        tracker.on_start(root)
        await model.tool_loop().ainvoke("2+2", config={"tags": ["mine"]})
    log = RunLog()
    while tracker.pending:
        log = log + tracker.pending.popleft()
    logs = log.state["logs"]
    assert list(logs) == ["tool_loop", "FakeChatModel", "add", "FakeChatModel:2"]
    loop_id = logs["tool_loop"]["id"]
    assert logs["add"]["type"] == "chain"
    assert logs["add"]["final_output"] == "4"
    assert logs["FakeChatModel"]["tags"] == ["mine"]
    chunks = logs["FakeChatModel"]["streamed_output"]
    assert any(chunk.tool_call_chunks for chunk in chunks)  # the call grows in the log
    assert logs["tool_loop"]["final_output"][-1]["content"] == "4"
    assert loop_id


async def test_closing_the_loop_early_closes_the_model_stream() -> None:
    model = _loop_model(CALL_ADD, "4").bind_tools([add])
    stream = model.tool_loop().astream("2+2")
    async for _ in stream:
        break
    await stream.aclose()
    with anyio.fail_after(5):
        added = await model.tool_loop().ainvoke("again")  # the model is still usable
    assert added[-1].type == "ai"


def test_tool_is_typed_as_tool() -> None:
    assert isinstance(loud, Tool)
