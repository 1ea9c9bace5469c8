"""chatstream: an async-first streaming SDK for chat models.

Every chat model is an async generator of `AIMessageChunk`; ``ainvoke``, ``abatch``,
``agenerate`` and the sync twins are all derived from that one stream.
"""

import typing as _typing

from .callbacks import CallbackHandler as CallbackHandler
from .defaults import create_chat_model as create_chat_model
from .errors import APIConnectionError as APIConnectionError
from .errors import APITimeoutError as APITimeoutError
from .errors import AuthenticationError as AuthenticationError
from .errors import BadRequestError as BadRequestError
from .errors import ChatStreamError as ChatStreamError
from .errors import ClosedError as ClosedError
from .errors import InputTypeError as InputTypeError
from .errors import InvalidInputError as InvalidInputError
from .errors import InvalidParameterError as InvalidParameterError
from .errors import MissingVariableError as MissingVariableError
from .errors import NotFoundError as NotFoundError
from .errors import OutputParserError as OutputParserError
from .errors import OverloadedError as OverloadedError
from .errors import PermissionDeniedError as PermissionDeniedError
from .errors import ProviderError as ProviderError
from .errors import RateLimitError as RateLimitError
from .errors import ServerError as ServerError
from .errors import StepLimitError as StepLimitError
from .errors import StreamInterruptedError as StreamInterruptedError
from .errors import StreamProtocolError as StreamProtocolError
from .errors import UnsupportedFeatureError as UnsupportedFeatureError
from .inputs import LanguageModelInput as LanguageModelInput
from .inputs import MessageLike as MessageLike
from .inputs import to_messages as to_messages
from .messages import AIMessage as AIMessage
from .messages import AIMessageChunk as AIMessageChunk
from .messages import AnyMessage as AnyMessage
from .messages import BaseMessage as BaseMessage
from .messages import ChatMessage as ChatMessage
from .messages import FunctionMessage as FunctionMessage
from .messages import HumanMessage as HumanMessage
from .messages import InvalidToolCall as InvalidToolCall
from .messages import SystemMessage as SystemMessage
from .messages import ToolCall as ToolCall
from .messages import ToolCallChunk as ToolCallChunk
from .messages import ToolMessage as ToolMessage
from .messages import UsageMetadata as UsageMetadata
from .messages import merge_chunks as merge_chunks
from .messages import messages_from_dict as messages_from_dict
from .model import BaseChatModel as BaseChatModel
from .model import RunConfig as RunConfig
from .outputs import ChatGeneration as ChatGeneration
from .outputs import ChatGenerationChunk as ChatGenerationChunk
from .outputs import LLMResult as LLMResult
from .outputs import RowResult as RowResult
from .outputs import RunInfo as RunInfo
from .prompts import ChatPromptTemplate as ChatPromptTemplate
from .prompts import ChatPromptValue as ChatPromptValue
from .prompts import PromptValue as PromptValue
from .prompts import StringPromptValue as StringPromptValue
from .runlog import RunLog as RunLog
from .runlog import RunLogPatch as RunLogPatch
from .runs import Run as Run
from .runs import RunObserver as RunObserver
from .runs import current_run as current_run
from .streams import ChatStream as ChatStream
from .trace import trace as trace

if _typing.TYPE_CHECKING:
    from ._tool_loop import ToolLoop as ToolLoop
    from .structured import StructuredOutput as StructuredOutput
    from .structured import StructuredResult as StructuredResult
    from .tools import Tool as Tool
    from .tools import arun_tools as arun_tools
    from .tools import partial_tool_calls as partial_tool_calls
    from .tools import run_tools as run_tools
    from .tools import tool as tool
    from .transport import Timeout as Timeout
from .trace import traceable as traceable

__version__ = "0.1.0"

__all__ = [
    "AIMessage",
    "AIMessageChunk",
    "APIConnectionError",
    "APITimeoutError",
    "AnyMessage",
    "AuthenticationError",
    "BadRequestError",
    "BaseChatModel",
    "BaseMessage",
    "CallbackHandler",
    "ChatGeneration",
    "ChatGenerationChunk",
    "ChatMessage",
    "ChatPromptTemplate",
    "ChatPromptValue",
    "ChatStream",
    "ChatStreamError",
    "ClosedError",
    "FunctionMessage",
    "HumanMessage",
    "InputTypeError",
    "InvalidInputError",
    "InvalidParameterError",
    "InvalidToolCall",
    "LLMResult",
    "LanguageModelInput",
    "MessageLike",
    "MissingVariableError",
    "NotFoundError",
    "OutputParserError",
    "OverloadedError",
    "PermissionDeniedError",
    "PromptValue",
    "ProviderError",
    "RateLimitError",
    "RowResult",
    "Run",
    "RunConfig",
    "RunInfo",
    "RunLog",
    "RunLogPatch",
    "RunObserver",
    "ServerError",
    "StepLimitError",
    "StreamInterruptedError",
    "StreamProtocolError",
    "StringPromptValue",
    "StructuredOutput",
    "StructuredResult",
    "SystemMessage",
    "Timeout",
    "Tool",
    "ToolCall",
    "ToolCallChunk",
    "ToolLoop",
    "ToolMessage",
    "UnsupportedFeatureError",
    "UsageMetadata",
    "arun_tools",
    "create_chat_model",
    "current_run",
    "merge_chunks",
    "messages_from_dict",
    "partial_tool_calls",
    "run_tools",
    "to_messages",
    "tool",
    "trace",
    "traceable",
]


_LAZY = {
    "Timeout": "transport",
    "Tool": "tools",
    "ToolLoop": "_tool_loop",
    "StructuredOutput": "structured",
    "StructuredResult": "structured",
    "arun_tools": "tools",
    "partial_tool_calls": "tools",
    "run_tools": "tools",
    "tool": "tools",
}
"""Names re-exported on first use: the transport loads aiohttp, and the tool and structured
output modules cost import time that most programs never need."""


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chatstream' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found once: later lookups do not come here
    return value
