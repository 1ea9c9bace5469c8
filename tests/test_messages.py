from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chatstream import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    merge_chunks,
    messages_from_dict,
)


def test_positional_construction_and_seed_repr() -> None:
    assert repr(AIMessage("J'adore la programmation.")) == (
        'AIMessage(content="J\'adore la programmation.")'
    )
    assert SystemMessage("You are an AI assistant").content == "You are an AI assistant"
    assert HumanMessage(content="keyword works too").content == "keyword works too"
    assert repr(HumanMessage("hi", name="bob")) == "HumanMessage(content='hi', name='bob')"


def test_required_fields_are_required() -> None:
    with pytest.raises(TypeError):
        FunctionMessage("x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ToolMessage("x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ChatMessage("x")  # type: ignore[call-arg]
    assert ChatMessage("x", role="critic").role == "critic"


def test_messages_are_frozen_and_reject_unknown_fields() -> None:
    message = HumanMessage("hi")
    with pytest.raises(ValidationError):
        message.content = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        HumanMessage("hi", colour="red")  # type: ignore[call-arg]


def test_content_blocks_and_text() -> None:
    message = HumanMessage(
        [
            {"type": "text", "text": "What is in "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "this image?"},
        ]
    )
    assert message.text == "What is in this image?"


def test_round_trip_through_json() -> None:
    originals = [
        SystemMessage("sys"),
        HumanMessage("hi", name="u"),
        AIMessage("", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}]),
        AIMessageChunk("par", tool_call_chunks=[{"name": "f", "args": "{", "id": "c", "index": 0}]),
        FunctionMessage("r", name="f"),
        ToolMessage("t", tool_call_id="c1", status="error"),
        ChatMessage("x", role="critic"),
    ]
    dumped = [message.model_dump(mode="json") for message in originals]
    assert messages_from_dict(dumped) == originals


def test_add_returns_new_chunk_and_leaves_both_sides_alone() -> None:
    left = AIMessageChunk("a", response_metadata={"meta": {"x": "1"}})
    right = AIMessageChunk("b", response_metadata={"meta": {"x": "2"}, "finish_reason": "stop"})
    left_before, right_before = left.model_dump(), right.model_dump()
    merged = left + right
    assert merged.content == "ab"
    assert merged.response_metadata == {"meta": {"x": "12"}, "finish_reason": "stop"}
    assert left.model_dump() == left_before
    assert right.model_dump() == right_before
    assert merged is not left
    assert merged is not right


def test_merge_rules() -> None:
    chunks = [
        AIMessageChunk("", id="chatcmpl-1", response_metadata={"model_name": "gpt"}),
        AIMessageChunk(
            "Hi",
            tool_call_chunks=[{"name": "get", "args": '{"ci', "id": "call_1", "index": 0}],
            additional_kwargs={"function_call": {"name": "f", "arguments": '{"a"'}},
        ),
        AIMessageChunk(
            " there",
            tool_call_chunks=[
                {"name": None, "args": 'ty": "Paris"}', "id": None, "index": 0},
                {"name": "other", "args": "", "id": "call_2", "index": 1},
            ],
            additional_kwargs={"function_call": {"arguments": ": 1}"}},
        ),
        AIMessageChunk(
            "",
            response_metadata={"finish_reason": "length", "model_name": "gpt"},
            usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        ),
        AIMessageChunk(
            "",
            response_metadata={"finish_reason": "stop"},
            usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        ),
    ]
    merged = merge_chunks(chunks)
    assert merged.content == "Hi there"
    assert merged.id == "chatcmpl-1"
    assert merged.response_metadata == {"model_name": "gpt", "finish_reason": "stop"}
    assert merged.additional_kwargs == {"function_call": {"name": "f", "arguments": '{"a": 1}'}}
    assert merged.tool_call_chunks == [
        {"name": "get", "args": '{"city": "Paris"}', "id": "call_1", "index": 0},
        {"name": "other", "args": "", "id": "call_2", "index": 1},
    ]
    assert merged.usage_metadata == {"input_tokens": 4, "output_tokens": 3, "total_tokens": 7}
    message = merged.to_message()
    assert message.tool_calls == [
        {"name": "get", "args": {"city": "Paris"}, "id": "call_1"},
        {"name": "other", "args": {}, "id": "call_2"},
    ]


def test_block_content_merges_by_index_and_coalesces_text() -> None:
    merged = merge_chunks(
        [
            AIMessageChunk("Hel"),
            AIMessageChunk([{"type": "text", "text": "lo"}]),
            AIMessageChunk([{"type": "thinking", "thinking": "hm", "index": 0}]),
            AIMessageChunk([{"type": "thinking", "thinking": "m", "index": 0, "signature": "s"}]),
            AIMessageChunk(" world"),
        ]
    )
    assert merged.content == [
        {"type": "text", "text": "Hello"},
        {"type": "thinking", "thinking": "hmm", "index": 0, "signature": "s"},
        {"type": "text", "text": " world"},
    ]
    assert merged.text == "Hello world"


def test_invalid_tool_arguments_never_raise() -> None:
    chunk = AIMessageChunk(
        tool_call_chunks=[
            {"name": "a", "args": '{"x": ', "id": "1", "index": 0},
            {"name": "b", "args": "[1, 2]", "id": "2", "index": 1},
            {"name": None, "args": "{}", "id": "3", "index": 2},
            {"name": "ok", "args": '{"y": 2}', "id": "4", "index": 3},
        ]
    )
    message = chunk.to_message()
    assert message.tool_calls == [{"name": "ok", "args": {"y": 2}, "id": "4"}]
    assert [(call["name"], call["args"]) for call in message.invalid_tool_calls] == [
        ("a", '{"x": '),
        ("b", "[1, 2]"),
        (None, "{}"),
    ]
    assert all(call["error"] for call in message.invalid_tool_calls)


# -- associativity, on chunks built from every kind of part --------------------------------

_text = st.text(alphabet='ab \n{}":é', max_size=4)
# Each key keeps one kind of value, as a provider's metadata does (mixed kinds are refused).
_metadata = st.fixed_dictionaries(
    {},
    optional={
        "finish_reason": st.one_of(st.none(), st.sampled_from(["", "stop", "length"])),
        "model_name": st.one_of(st.none(), _text),
        "note": st.one_of(st.none(), _text),
        "count": st.one_of(st.none(), st.integers(0, 3)),
        "nested": st.one_of(
            st.none(), st.dictionaries(st.sampled_from(["x", "y"]), _text, max_size=2)
        ),
    },
)
_block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(
        lambda i, t: {"type": "thinking", "thinking": t, "index": i}, st.integers(0, 2), _text
    ),
    st.builds(lambda t: {"type": "image_url", "image_url": {"url": t}}, _text),
)
_content = st.one_of(_text, st.lists(_block, max_size=3))
_tool = st.builds(
    lambda n, a, i, idx: {"name": n, "args": a, "id": i, "index": idx},
    st.one_of(st.none(), st.sampled_from(["f", "g"])),
    st.one_of(st.none(), _text),
    st.one_of(st.none(), st.sampled_from(["c1", "c2"])),
    st.one_of(st.none(), st.integers(0, 2)),
)
_usage = st.one_of(
    st.none(),
    st.builds(
        lambda i, o: {"input_tokens": i, "output_tokens": o, "total_tokens": i + o},
        st.integers(0, 9),
        st.integers(0, 9),
    ),
)
chunks = st.builds(
    lambda c, meta, tools, usage, mid: AIMessageChunk(
        c, response_metadata=meta, tool_call_chunks=tools, usage_metadata=usage, id=mid
    ),
    _content,
    _metadata,
    st.lists(_tool, max_size=2),
    _usage,
    st.one_of(st.none(), st.sampled_from(["m1", "m2"])),
)


def test_mixed_kinds_are_refused_with_the_key() -> None:
    left = AIMessageChunk(response_metadata={"logprobs": {"content": []}})
    right = AIMessageChunk(response_metadata={"logprobs": "none"})
    with pytest.raises(TypeError, match="logprobs: cannot merge a dict with a str"):
        left + right


@given(chunks, chunks, chunks)
def test_add_is_associative(a: AIMessageChunk, b: AIMessageChunk, c: AIMessageChunk) -> None:
    assert ((a + b) + c).model_dump() == (a + (b + c)).model_dump()


@given(st.lists(chunks, min_size=1, max_size=6))
def test_merge_chunks_equals_folding_add(parts: list[AIMessageChunk]) -> None:
    folded = parts[0]
    for part in parts[1:]:
        folded = folded + part
    assert merge_chunks(parts).model_dump() == folded.model_dump()


@given(st.lists(_text, min_size=1, max_size=8))
def test_string_content_concatenates(pieces: list[str]) -> None:
    assert merge_chunks([AIMessageChunk(p) for p in pieces]).content == "".join(pieces)


@given(st.lists(chunks, min_size=1, max_size=8), st.lists(_text, max_size=8))
def test_a_run_keeps_plain_chunks_as_strings_and_loses_nothing(
    parts: list[AIMessageChunk], plain: list[str]
) -> None:
    from chatstream import Run

    streamed = [*parts, *(AIMessageChunk(text) for text in plain)]
    run = Run(name="r")
    for chunk in streamed:
        run.add_chunk(chunk)
    run.end()
    assert sum(isinstance(item, str) for item in run.items) >= len(plain)
    assert run.chunks == streamed
    assert run.output.model_dump() == merge_chunks(streamed).model_dump()
