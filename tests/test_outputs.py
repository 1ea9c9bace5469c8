from __future__ import annotations

from uuid import UUID

from chatstream import (
    AIMessage,
    AIMessageChunk,
    ChatGeneration,
    ChatGenerationChunk,
    LLMResult,
    RunInfo,
)


def test_llm_result_repr_has_the_seed_shape() -> None:
    run_id = UUID("077917a9-026c-47c4-b308-77b37c3a3bfa")
    result = LLMResult(
        generations=[
            [
                ChatGeneration(
                    message=AIMessage("J'adore programmer."),
                    generation_info={"finish_reason": "stop"},
                )
            ]
        ],
        llm_output={
            "token_usage": {"prompt_tokens": 53, "completion_tokens": 18, "total_tokens": 71},
            "model_name": "gpt-3.5-turbo",
        },
        run=[RunInfo(run_id=run_id)],
    )
    assert repr(result) == (
        'LLMResult(generations=[[ChatGeneration(text="J\'adore programmer.", '
        "generation_info={'finish_reason': 'stop'}, "
        'message=AIMessage(content="J\'adore programmer."))]], '
        "llm_output={'token_usage': "
        "{'prompt_tokens': 53, 'completion_tokens': 18, 'total_tokens': 71}, "
        "'model_name': 'gpt-3.5-turbo'}, "
        "run=[RunInfo(run_id=UUID('077917a9-026c-47c4-b308-77b37c3a3bfa'))])"
    )


def test_generation_chunks_add() -> None:
    a = ChatGenerationChunk(message=AIMessageChunk("a"))
    b = ChatGenerationChunk(message=AIMessageChunk("b"), generation_info={"finish_reason": "stop"})
    merged = a + b
    assert merged.text == "ab"
    assert merged.generation_info == {"finish_reason": "stop"}
