from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import anyio
import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatstream import (
    AIMessageChunk,
    BaseChatModel,
    BaseMessage,
    InvalidInputError,
    RateLimitError,
    RunLog,
    RunLogPatch,
    trace,
)
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.runlog import Op, to_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import Tracked


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def test_patches_have_the_seed_shape() -> None:
    model = FakeChatModel(responses=["The purpose of regularization."])
    patches = await collect(model.astream_log("q"))
    first, *middle, last = patches
    assert first.ops[0]["op"] == "replace"
    assert first.ops[0]["path"] == ""
    initial = first.ops[0]["value"]
    assert set(initial) == {"id", "streamed_output", "final_output", "logs", "name", "type"}
    assert (initial["streamed_output"], initial["final_output"], initial["logs"]) == ([], None, {})
    assert (initial["name"], initial["type"]) == ("FakeChatModel", "chat_model")
    assert [p.ops for p in middle[:2]] == [
        [{"op": "add", "path": "/streamed_output/-", "value": AIMessageChunk("The")}],
        [{"op": "add", "path": "/streamed_output/-", "value": AIMessageChunk(" purpose")}],
    ]
    assert last.ops[0]["op"] == "replace"
    assert last.ops[0]["path"] == "/final_output"
    final = last.ops[0]["value"]
    generation = final["generations"][0][0]
    assert generation["text"] == "The purpose of regularization."
    assert generation["generation_info"] == {"finish_reason": "stop"}
    assert isinstance(generation["message"], AIMessageChunk)
    assert final["run"] is None
    assert [p.seq for p in patches] == list(range(1, len(patches) + 1))
    assert repr(middle[0]) == (
        "RunLogPatch({'op': 'add', 'path': '/streamed_output/-', "
        "'value': AIMessageChunk(content='The')})"
    )


async def test_patches_arrive_as_chunks_arrive(tracked: Tracked) -> None:
    tracked.pause = 0.01
    progress = [
        (patch.ops[0]["value"].content, tracked.finished)
        async for patch in tracked.astream_log("q")
        if patch.ops[0]["path"] == "/streamed_output/-"
    ]
    # Each chunk's patch reaches the caller while the provider is still streaming.
    assert progress == [("Hello", 0), (" world", 0), ("!", 0)]


async def test_sum_of_patches_is_the_run_state_and_final_output_is_ainvoke() -> None:
    model = FakeChatModel(responses=["one two three"])
    patches = await collect(model.astream_log("q"))
    log = patches[0] + patches[1]
    assert isinstance(log, RunLog)
    for patch in patches[2:]:
        log = log + patch
    state = log.state
    assert [c.content for c in state["streamed_output"]] == ["one", " two", " three", ""]
    message = state["final_output"]["generations"][0][0]["message"]
    invoked = await model.ainvoke("q")
    assert message.to_message().model_dump(exclude={"id"}) == invoked.model_dump(exclude={"id"})


async def test_iadd_applies_in_place_without_copying_or_aliasing() -> None:
    model = FakeChatModel(responses=["x y"])
    patches = await collect(model.astream_log("q"))
    log = patches[0] + patches[1]
    streamed = log.state["streamed_output"]
    same = log
    log += patches[2]
    assert log is same
    assert log.state["streamed_output"] is streamed  # appended in place: O(size of the patch)
    # ... and the handed-out initial patch is not changed by applying later ones.
    assert patches[0].ops[0]["value"]["streamed_output"] == []


async def test_add_leaves_its_left_operand_as_it_was() -> None:
    model = FakeChatModel(responses=["x y"])
    patches = await collect(model.astream_log("q"))
    before = patches[0] + patches[1]
    snapshot = copy.deepcopy(before.state)
    after = before + patches[2]
    assert after is not before
    assert before.state == snapshot
    assert len(before.ops) == 2 and len(after.ops) == 3
    assert [c.content for c in after.state["streamed_output"]] == ["x", " y"]
    # What the patch did not touch is shared, not copied.
    assert after.state["logs"] is before.state["logs"]


def test_run_log_applies_every_rfc6902_op_through_jsonpatch() -> None:
    log = RunLog(Op(op="replace", path="", value={"a": [1], "b": {}}))
    moved = log + RunLogPatch(
        {"op": "copy", "from": "/a", "path": "/c"},  # type: ignore[typeddict-unknown-key]
        {"op": "move", "from": "/c", "path": "/b/d"},  # type: ignore[typeddict-unknown-key]
        Op(op="test", path="/a/0", value=1),
    )
    assert moved.state == {"a": [1], "b": {"d": [1]}}
    assert log.state == {"a": [1], "b": {}}
    with pytest.raises(InvalidInputError) as info:
        log + RunLogPatch(Op(op="add", path="/a/0", value=0), Op(op="test", path="/a/0", value=9))
    assert info.value.where == "ops[2]"
    with pytest.raises(InvalidInputError, match="missing"):
        log += RunLogPatch(Op(op="replace", path="/missing/x", value=1))
    assert log.state == {"a": [1], "b": {}}


async def test_diff_false_yields_the_accumulated_log() -> None:
    model = FakeChatModel(responses=["x y"])
    logs = await collect(model.astream_log("q", diff=False))
    assert all(isinstance(log, RunLog) for log in logs)
    assert len({id(log) for log in logs}) == len(logs)  # a snapshot each, not one log mutated
    assert [len(log.state["streamed_output"]) for log in logs] == [0, 1, 2, 3, 3]
    expected = RunLog()
    for patch in await collect(model.astream_log("q")):
        expected = expected + patch
    final = logs[-1].state
    assert final["final_output"]["generations"][0][0]["text"] == "x y"
    assert [c.content for c in final["streamed_output"]] == [
        c.content for c in expected.state["streamed_output"]
    ]


async def test_error_mid_stream_records_error_and_partial_then_raises() -> None:
    model = FakeChatModel(
        responses=[FakeResponse(text="a b c", error=RateLimitError("slow down"), error_after=2)]
    )
    patches: list[RunLogPatch] = []

    async def consume() -> None:
        async for patch in model.astream_log("q"):
            patches.append(patch)

    with pytest.raises(RateLimitError) as info:
        await consume()
    assert info.value.partial is not None
    assert info.value.partial.content == "a b"
    last = patches[-1].ops
    assert last[0] == {"op": "add", "path": "/error", "value": "RateLimitError: slow down"}
    assert last[1]["path"] == "/final_output"
    assert last[1]["value"]["generations"][0][0]["text"] == "a b"


async def test_without_streamed_output_list() -> None:
    model = FakeChatModel(responses=["x y"])
    patches = await collect(model.astream_log("q", with_streamed_output_list=False))
    assert [p.ops[0]["path"] for p in patches] == ["", "/final_output"]


class Router(BaseChatModel):
    """Answers by asking an inner model twice: its calls are runs inside this one."""

    inner: FakeChatModel

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        first = await self.inner.ainvoke(messages, config={"tags": ["draft"]})
        yield AIMessageChunk(first.text)
        second = await self.inner.ainvoke(messages, config={"tags": ["final"]})
        yield AIMessageChunk(" / " + second.text)


async def test_inner_runs_appear_under_logs_with_unique_names() -> None:
    router = Router(inner=FakeChatModel(responses=["one", "two"]))
    log = RunLog()
    async for patch in router.astream_log("q"):
        log = log + patch
    logs = log.state["logs"]
    assert set(logs) == {"FakeChatModel", "FakeChatModel:2"}
    assert logs["FakeChatModel"]["tags"] == ["draft"]
    assert logs["FakeChatModel:2"]["final_output"]["generations"][0][0]["text"] == "two"
    assert [c.content for c in logs["FakeChatModel"]["streamed_output"]] == ["one", ""]
    assert logs["FakeChatModel"]["end_time"] is not None
    assert log.state["final_output"]["generations"][0][0]["text"] == "one / two"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"include_tags": ["final"]}, {"FakeChatModel"}),
        ({"exclude_tags": ["final"]}, {"FakeChatModel"}),
        ({"include_names": ["Other"]}, set()),
        ({"include_types": ["chat_model"]}, {"FakeChatModel", "FakeChatModel:2"}),
        ({"exclude_types": ["chat_model"]}, set()),
    ],
)
async def test_filters_select_inner_runs(filters: dict[str, Any], expected: set[str]) -> None:
    router = Router(inner=FakeChatModel(responses=["one", "two"]))
    log = RunLog()
    async for patch in router.astream_log("q", **filters):
        log = log + patch
    assert set(log.state["logs"]) == expected
    if filters == {"include_tags": ["final"]}:
        assert log.state["logs"]["FakeChatModel"]["tags"] == ["final"]


async def test_traced_steps_inside_a_model_are_chain_runs() -> None:
    inner = FakeChatModel(responses=["hi"])

    class Stepper(BaseChatModel):
        async def _astream(
            self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
        ) -> AsyncIterator[AIMessageChunk]:
            with trace("lookup", inputs={"q": messages[-1].text}) as step:
                step.step_outputs = (await inner.ainvoke("x")).text
            yield AIMessageChunk("done")

    log = RunLog()
    async for patch in Stepper().astream_log("q", include_types=["chain"]):
        log = log + patch
    assert set(log.state["logs"]) == {"lookup"}
    assert log.state["logs"]["lookup"]["final_output"] == "hi"


def test_sync_stream_log() -> None:
    model = FakeChatModel(responses=["x y"])
    patches = list(model.stream_log("q"))
    assert patches[0].ops[0]["path"] == ""
    assert patches[-1].ops[0]["path"] == "/final_output"


# -- property: any RFC 6902 client rebuilds the same state from to_json() ------------------

_pieces = st.lists(st.text(alphabet='ab é{}"/~', min_size=0, max_size=4), min_size=0, max_size=8)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_pieces, min_size=1, max_size=3), st.booleans())
def test_json_patches_rebuild_the_state(answers: list[list[str]], nested: bool) -> None:
    def make() -> BaseChatModel:
        responses = [FakeResponse(chunks=pieces) for pieces in answers]
        return (
            Router(inner=FakeChatModel(responses=responses))
            if nested
            else FakeChatModel(responses=responses)
        )

    async def run() -> None:
        model = make()
        document: Any = {}
        log = RunLog()
        async for patch in model.astream_log("q"):
            document = jsonpatch.apply_patch(document, patch.to_json())
            log = log + patch
        assert document == to_json(log.state)
        invoked = await make().ainvoke("q")  # a fresh model: the fake cycles its answers
        final = log.state["final_output"]["generations"][0][0]["message"]
        assert final.content == invoked.content

    anyio.run(run)


def test_runlog_copy_keeps_an_earlier_state() -> None:
    log = RunLogPatch({"op": "replace", "path": "", "value": {"a": []}}) + RunLogPatch(
        {"op": "add", "path": "/a/-", "value": 1}
    )
    kept = copy.deepcopy(log)
    log = log + RunLogPatch({"op": "add", "path": "/a/-", "value": 2})
    assert kept.state == {"a": [1]}
    assert log.state == {"a": [1, 2]}
