"""The chat-model quick start, end to end, on whatever model is configured.

With no API key this runs on the offline default, which labels itself as such.
Run: python examples/quickstart.py
"""

from __future__ import annotations

import anyio

from chatstream import HumanMessage, SystemMessage, create_chat_model


def main() -> None:
    chat = create_chat_model()
    print(f"model: {chat.model_name}\n")

    # Messages in, a message out.
    messages = [
        SystemMessage("You are a helpful assistant that translates English to French."),
        HumanMessage("I love programming."),
    ]
    print("invoke:   ", repr(chat.invoke(messages)))

    # A model is callable, and a plain string is a human message.
    print("call:     ", repr(chat("What is the purpose of model regularization?")))

    # Stream the answer chunk by chunk.
    print("stream:    ", end="")
    for chunk in chat.stream("What is the purpose of model regularization?"):
        print(chunk.content, end="|", flush=True)
    print()

    # Many inputs at once; the order is kept.
    answers = chat.batch(["I love programming.", "I love artificial intelligence."])
    print("batch:    ", [answer.text[:40] for answer in answers])

    # generate() returns an LLMResult with usage, the model name and a run id per input.
    result = chat.generate(
        [
            [SystemMessage("Translate English to French."), HumanMessage("I love programming.")],
            [SystemMessage("Translate English to French."), HumanMessage("I love AI.")],
        ]
    )
    print("generate: ", result.llm_output)
    print("run ids:  ", [str(info.run_id) for info in result.run or []])

    # The same, async: every call above is derived from this one stream.
    async def stream_async() -> str:
        return "".join([str(chunk.content) async for chunk in chat.astream("Hello!")])

    print("astream:  ", anyio.run(stream_async)[:60], "...")

    # The run log: JSON patches made as the chunks arrive (first three, then the last).
    patches = list(chat.stream_log("What is the purpose of model regularization?"))
    for patch in [*patches[:3], patches[-1]]:
        print(patch)


if __name__ == "__main__":
    main()
