from __future__ import annotations

import pytest

from chatstream import (
    AIMessage,
    ChatPromptTemplate,
    HumanMessage,
    InputTypeError,
    InvalidInputError,
    MissingVariableError,
    SystemMessage,
)


def test_format_messages_and_prompt() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Translate {src} into {lang}."),
            AIMessage("Ready {literally}."),
            ("human", "{text}"),
        ]
    )
    assert prompt.input_variables == ["src", "lang", "text"]
    messages = prompt.format_messages(src="English", lang="French", text="I love programming.")
    assert messages == [
        SystemMessage("Translate English into French."),
        AIMessage("Ready {literally}."),
        HumanMessage("I love programming."),
    ]
    value = prompt.format_prompt(src="English", lang="French", text="Hi")
    assert value.to_messages()[-1] == HumanMessage("Hi")
    assert (
        value.to_string()
        == "System: Translate English into French.\nAI: Ready {literally}.\nHuman: Hi"
    )


def test_missing_variable_is_a_key_error_naming_it() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{text} in {lang}")])
    with pytest.raises(KeyError) as info:
        prompt.format_messages(text="x")
    assert isinstance(info.value, MissingVariableError)
    assert info.value.variable == "lang"
    assert "'lang'" in str(info.value)


def test_bad_templates() -> None:
    with pytest.raises(InvalidInputError, match="unknown role 'robot'"):
        ChatPromptTemplate.from_messages([("robot", "x")])
    with pytest.raises(InvalidInputError, match="messages\\[0\\]"):
        ChatPromptTemplate.from_messages([("human", "{unclosed")])
    with pytest.raises(InvalidInputError, match="plain name"):
        ChatPromptTemplate.from_messages([("human", "{a.b}")])
    with pytest.raises(InputTypeError, match="messages\\[1\\]"):
        ChatPromptTemplate.from_messages([("human", "x"), 3])  # type: ignore[list-item]


def test_escaped_braces_stay_literal() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", 'JSON like {{"a": {n}}}')])
    assert prompt.format_messages(n=1)[0].content == 'JSON like {"a": 1}'
