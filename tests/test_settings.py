"""One settings path: what a run records is what the provider gets, under one merge rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import pytest
from pydantic import Field

import chatstream
from chatstream import (
    AIMessageChunk,
    BaseChatModel,
    BaseMessage,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
    Timeout,
    create_chat_model,
)
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.fake import FakeChatModel
from chatstream.providers.offline import ChatOffline
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI
from chatstream.settings import PerCall, Stop

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Recorder(BaseChatModel):
    """Records the settings its provider stream is handed."""

    temperature: Annotated[float | None, PerCall()] = None
    stop: Annotated[Stop, PerCall()] = None
    top_k: Annotated[int, PerCall(), Field(ge=1)] = 5
    seen: list[dict[str, Any]] = Field(default_factory=list)

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        self.seen.append({"stop": stop, **settings})
        yield AIMessageChunk("ok")


async def test_the_run_records_exactly_what_the_provider_gets() -> None:
    model = Recorder(stop=["END"], temperature=0.5)
    stream = model.astream("q", top_k=2)
    async for _ in stream:
        pass
    assert model.seen == [{"stop": ["END"], "temperature": 0.5, "top_k": 2}]
    assert stream.run.invocation_params == {"model": "Recorder", **model.seen[0]}


async def test_a_per_call_stop_replaces_the_models() -> None:
    model = Recorder(stop=["END"])
    await model.ainvoke("q", stop=["HALT"])
    assert model.seen[-1]["stop"] == ["HALT"]


@pytest.mark.parametrize("where", ["model", "call"])
async def test_a_str_stop_is_one_sequence(where: str) -> None:
    model = FakeChatModel(responses=["one two three"], stop="two" if where == "model" else None)
    answer = await model.ainvoke("q", stop="two" if where == "call" else None)
    assert answer.content == "one "
    assert answer.response_metadata["finish_reason"] == "stop"


async def test_per_call_values_are_validated_like_the_field() -> None:
    model = Recorder()
    with pytest.raises(InvalidParameterError, match="top_k") as info:
        await model.ainvoke("q", top_k=0)
    assert info.value.where == "top_k"
    with pytest.raises(InvalidParameterError, match="did you mean 'temperature'"):
        await model.ainvoke("q", temprature=0.1)


def test_settings_are_declared_once_as_fields() -> None:
    assert Recorder.call_params == {"temperature", "stop", "top_k"}
    assert ChatOllama.settings_spec.wire["max_tokens"] == "options.num_predict"
    assert ChatAnthropic.settings_spec.wire["stop"] == "stop_sequences"
    assert "tools" not in ChatAnthropic.settings_spec.wire  # converted by its _to_wire
    with pytest.raises(TypeError, match="PerCall"):

        class Old(BaseChatModel):  # the former way: a hand-kept list
            call_params = frozenset({"x"})

            def _astream(self, messages: Any, **settings: Any) -> Any:
                raise NotImplementedError


@pytest.mark.parametrize("cls", [FakeChatModel, ChatOffline])
async def test_test_models_accept_and_record_the_common_settings(cls: type[BaseChatModel]) -> None:
    model = cls(**({"responses": ["a b c d"]} if cls is FakeChatModel else {}))
    stream = model.astream(
        "q", temperature=0, max_tokens=2, stop=["zzz"], tools=[{"type": "function"}], seed=1
    )
    chunks = [chunk async for chunk in stream]
    params = stream.run.invocation_params
    assert (params["temperature"], params["max_tokens"], params["seed"]) == (0, 2, 1)
    assert params["tools"] == [{"type": "function"}]
    assert len([c for c in chunks if c.content]) == 2
    assert stream.message.response_metadata["finish_reason"] == "length"


def test_create_chat_model_passes_settings_to_the_fake() -> None:
    model = create_chat_model("fake", temperature=0)
    assert isinstance(model, FakeChatModel)
    assert model.temperature == 0


@pytest.mark.parametrize(
    ("cls", "given", "right"),
    [
        (ChatOpenAI, "openai_api_key", "api_key"),
        (ChatOpenAI, "model_name", "model"),
        (ChatAnthropic, "anthropic_api_key", "api_key"),
        (ChatOpenAI, "request_timeout", "timeout"),
        (ChatOllama, "num_predict", "max_tokens"),
        (ChatOpenAI, "temprature", "temperature"),
    ],
)
def test_foreign_setting_names_are_a_typed_error_naming_the_right_one(
    cls: type[BaseChatModel], given: str, right: str
) -> None:
    with pytest.raises(InvalidParameterError, match=f"'{right}'") as info:
        cls(**{given: "x"})
    assert info.value.where == given
    assert isinstance(info.value, TypeError)


def test_timeout_is_public_and_a_number_is_a_total_limit() -> None:
    assert chatstream.Timeout is Timeout
    assert ChatOpenAI(api_key="k", timeout=30).timeout == Timeout(total=30)
    assert ChatAnthropic(api_key="k", timeout=2.5).timeout.total == 2.5
    assert ChatOllama(timeout=Timeout(connect=1, idle=2)).timeout == Timeout(connect=1, idle=2)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"tag": ["x"]}, InvalidInputError, "did you mean 'tags'"),
        ({"callbacks": "nope"}, InputTypeError, "list of callback handlers"),
        ({"callbacks": [object()]}, InputTypeError, "not a callback handler"),
        ({"tags": "x"}, InputTypeError, "config\\['tags'\\] must be list"),
        ({"max_concurrency": True}, InputTypeError, "max_concurrency"),
    ],
)
async def test_a_bad_config_is_a_typed_error(
    config: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await FakeChatModel(responses=["x"]).ainvoke("q", config=config)


@pytest.mark.parametrize("role", ["sytem", "usr", "asistant", "humann"])
def test_a_typod_role_suggests_the_close_one(role: str) -> None:
    with pytest.raises(InvalidInputError, match="did you mean") as info:
        chatstream.to_messages([(role, "x")])
    assert info.value.where == "input[0]"
    assert "ChatMessage" in str(info.value)


def test_a_custom_role_still_works() -> None:
    [message] = chatstream.to_messages([("critic", "x")])
    assert message == chatstream.ChatMessage("x", role="critic")
    [explicit] = chatstream.to_messages([chatstream.ChatMessage("x", role="sytem")])
    assert isinstance(explicit, chatstream.ChatMessage)
