from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from chatstream import CallbackHandler, Run, current_run, trace, traceable
from chatstream.providers.fake import FakeChatModel

if TYPE_CHECKING:
    from uuid import UUID


class Parents(CallbackHandler):
    def __init__(self) -> None:
        self.parents: list[UUID | None] = []

    def on_chat_model_start(self, run: Run) -> None:
        self.parents.append(run.parent_run_id)


async def test_calls_inside_trace_are_children() -> None:
    parents = Parents()
    model = FakeChatModel(responses=["x"], callbacks=[parents])
    with trace("step", inputs={"q": 1}) as step:
        assert current_run() is step
        await model.ainvoke("a")
        await model.abatch(["b", "c"])  # tasks of a task group inherit the context
    assert current_run() is None
    await model.ainvoke("outside")
    assert parents.parents == [step.id, step.id, step.id, None]
    assert step.run_type == "chain"
    assert step.end_time is not None


def test_trace_reaches_through_the_sync_bridge() -> None:
    parents = Parents()
    model = FakeChatModel(responses=["x"], callbacks=[parents])
    with trace("sync step") as step:
        model.invoke("a")
        list(model.stream("b"))
    assert parents.parents == [step.id, step.id]


async def test_the_current_run_does_not_leak_into_the_consumer() -> None:
    model = FakeChatModel(responses=["a b c"])
    async for _ in model.astream("q"):
        assert current_run() is None


def test_traceable_records_inputs_outputs_and_nesting() -> None:
    parents = Parents()
    model = FakeChatModel(responses=["answer"], callbacks=[parents])
    steps: list[Run] = []

    @traceable
    async def answer(question: str) -> str:
        run = current_run()
        assert run is not None
        steps.append(run)
        return (await model.ainvoke(question)).text

    @traceable(name="outer")
    def outer(question: str) -> str:
        run = current_run()
        assert run is not None
        steps.append(run)
        return anyio.run(answer, question)

    assert outer("why?") == "answer"
    outer_run, inner_run = steps
    assert outer_run.name == "outer"
    assert outer_run.step_inputs == {"question": "why?"}
    assert outer_run.step_outputs == "answer"
    assert inner_run.name.endswith("answer")
    assert inner_run.parent_run_id == outer_run.id
    assert parents.parents == [inner_run.id]


async def test_failed_step_records_the_error() -> None:
    try:
        with trace("boom") as step:
            raise KeyError("x")
    except KeyError:
        pass
    assert isinstance(step.error, KeyError)
    assert step.end_time is not None
