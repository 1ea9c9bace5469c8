from __future__ import annotations

from typing import Any

import pytest

from chatstream import (
    AIMessage,
    ChatMessage,
    ChatPromptValue,
    FunctionMessage,
    HumanMessage,
    InputTypeError,
    InvalidInputError,
    StringPromptValue,
    SystemMessage,
    ToolMessage,
    to_messages,
)


def test_string_becomes_a_human_message() -> None:
    assert to_messages("hi") == [HumanMessage("hi")]


def test_message_and_prompt_values() -> None:
    assert to_messages(SystemMessage("s")) == [SystemMessage("s")]
    assert to_messages(StringPromptValue(text="p")) == [HumanMessage("p")]
    value = ChatPromptValue(messages=[SystemMessage("s"), HumanMessage("h")])
    assert to_messages(value) == [SystemMessage("s"), HumanMessage("h")]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (("human", "a"), HumanMessage("a")),
        (("user", "a"), HumanMessage("a")),
        (("ai", "a"), AIMessage("a")),
        (("assistant", "a"), AIMessage("a")),
        (("system", "a"), SystemMessage("a")),
        (("critic", "a"), ChatMessage("a", role="critic")),
        ("plain", HumanMessage("plain")),
        ({"role": "user", "content": "a", "name": "n"}, HumanMessage("a", name="n")),
        ({"role": "developer", "content": "a"}, SystemMessage("a")),
        ({"role": "function", "name": "f", "content": "r"}, FunctionMessage("r", name="f")),
        ({"role": "tool", "tool_call_id": "c", "content": "r"}, ToolMessage("r", tool_call_id="c")),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            AIMessage(
                "",
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_abc"}],
            ),
        ),
        (HumanMessage("m").model_dump(mode="json"), HumanMessage("m")),
    ],
)
def test_message_like_items(item: Any, expected: Any) -> None:
    assert to_messages([item]) == [expected]


@pytest.mark.parametrize(
    ("value", "error", "where", "fragment"),
    [
        (42, InputTypeError, "input", "got int"),
        (b"bytes", InputTypeError, "input", "got bytes"),
        (["ok", 3.5], InputTypeError, "input[1]", "got float"),
        ([("human",)], InvalidInputError, "input[0]", "(role, content) pair"),
        ([(1, "x")], InvalidInputError, "input[0]", "(role, content) pair"),
        ([("tool", "x")], InvalidInputError, "input[0]", "tool_call_id"),
        ([("function", "x")], InvalidInputError, "input[0]", "'name'"),
        (["a", {"content": "x"}], InvalidInputError, "input[1]", "needs a 'role'"),
        ([{"role": "user"}], InvalidInputError, "input[0]", "needs 'content'"),
        ([{"role": "tool", "content": "x"}], InvalidInputError, "input[0]", "tool_call_id"),
        ([{"role": "user", "content": 5}], InvalidInputError, "input[0]", "content"),
        ([{"type": "nonsense", "content": "x"}], InvalidInputError, "input[0]", "saved message"),
    ],
)
def test_bad_input_names_position(
    value: Any, error: type[Exception], where: str, fragment: str
) -> None:
    with pytest.raises(error) as info:
        to_messages(value)
    assert info.value.where == where  # type: ignore[attr-defined]
    assert str(info.value).startswith(f"{where}: ")
    assert fragment in str(info.value)


def test_input_errors_are_value_and_type_errors() -> None:
    with pytest.raises(TypeError):
        to_messages(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool_call_id"):
        to_messages([("tool", "x")])
