"""Request validation of the local OpenAI server, with the real API's messages and params."""

from __future__ import annotations

import json
import re
from typing import Any, final

__all__ = ["RequestError", "strict_problem", "validate_chat_request"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@final
class RequestError(Exception):
    """A request the real API would reject, with the fields of its error object.

    Args:
        status: HTTP status.
        message: ``error.message``.
        param: ``error.param``.
        code: ``error.code``.
    """

    def __init__(self, status: int, message: str, param: str | None, code: str | None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def validate_chat_request(body: Any) -> None:
    """Reject a chat completions body the way the OpenAI API does; unknown fields pass.

    Args:
        body: The parsed JSON body (anything, since clients may send garbage).

    Raises:
        RequestError: The first problem found.
    """
    if not isinstance(body, dict):
        raise RequestError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
            None,
            None,
        )
    if "model" not in body:
        raise RequestError(400, "you must provide a model parameter", None, None)
    if not isinstance(body["model"], str):
        raise RequestError(
            400, _type_message("model", "a string", body["model"]), "model", "invalid_type"
        )
    if "messages" not in body:
        raise RequestError(
            400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        raise RequestError(
            400,
            _type_message("messages", "an array of objects", messages),
            "messages",
            "invalid_type",
        )
    if not messages:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    _validate_messages(messages)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    _validate_tools(body)
    _validate_response_format(body)
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise RequestError(
            400,
            f"Invalid 'n': expected a value between 1 and 128, got {n!r}.",
            "n",
            "invalid_value",
        )


def _type_message(param: str, expected: str, value: Any) -> str:
    kind = {str: "a string", list: "an array", dict: "an object", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )
    return f"Invalid type for '{param}': expected {expected}, but got {kind} instead."


def _validate_messages(messages: list[Any]) -> None:
    pending: list[str] = []  # tool_call_ids still waiting for their tool message
    pending_at = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(
                400, _type_message(where, "an object", message), where, "invalid_type"
            )
        role = message.get("role")
        if role not in _ROLES:
            supported = ", ".join(f"'{r}'" for r in _ROLES)
            raise RequestError(
                400,
                f"Invalid value: {role!r}. Supported values are: {supported}.",
                f"{where}.role",
                "invalid_value",
            )
        if pending and role != "tool":
            _unanswered(pending, pending_at)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None:
                raise RequestError(
                    400,
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    f"{where}.tool_call_id",
                    "missing_required_parameter",
                )
            if call_id not in pending:
                raise RequestError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            pending.remove(call_id)
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            pending = [str(c.get("id")) for c in calls if isinstance(c, dict)]
            pending_at = i
            if message.get("content") is None and not calls and not message.get("function_call"):
                raise RequestError(
                    400,
                    f"Missing required parameter: '{where}.content'.",
                    f"{where}.content",
                    "missing_required_parameter",
                )
        elif "content" not in message:
            raise RequestError(
                400,
                f"Missing required parameter: '{where}.content'.",
                f"{where}.content",
                "missing_required_parameter",
            )
    if pending:
        _unanswered(pending, pending_at)


def _unanswered(pending: list[str], at: int) -> None:
    raise RequestError(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(map(str, pending)),
        f"messages.[{at}].role",
        None,
    )


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise RequestError(
                400, _type_message("tools", "an array", tools), "tools", "invalid_type"
            )
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                where = f"tools[{i}]"
                raise RequestError(
                    400, _type_message(where, "an object", tool), where, "invalid_type"
                )
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if tool.get("type") == "function" and not isinstance(name, str):
                raise RequestError(
                    400,
                    f"Missing required parameter: 'tools[{i}].function.name'.",
                    f"tools[{i}].function.name",
                    "missing_required_parameter",
                )
            if isinstance(name, str) and not _FUNCTION_NAME.fullmatch(name):
                raise RequestError(
                    400,
                    f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    f"tools[{i}].function.name",
                    "invalid_value",
                )
            if isinstance(function, dict) and isinstance(name, str):
                _validate_function(i, function)
    if body.get("tool_choice") is not None and not tools:
        raise RequestError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
            None,
        )
    if body.get("parallel_tool_calls") is not None and not tools:
        raise RequestError(
            400,
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed "
            "when 'tools' are specified.",
            "parallel_tool_calls",
            None,
        )
    _validate_tool_choice(body.get("tool_choice"), tools or [])


def _validate_function(i: int, function: dict[str, Any]) -> None:
    name, parameters = function["name"], function.get("parameters")
    where = f"tools[{i}].function.parameters"
    if parameters is None:
        return
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        kind = parameters.get("type") if isinstance(parameters, dict) else None
        raise RequestError(
            400,
            f"Invalid schema for function '{name}': schema must be a JSON Schema of "
            f"'type: \"object\"', got 'type: \"{kind}\"'.",
            where,
            "invalid_function_parameters",
        )
    if function.get("strict") is True and (problem := strict_problem(parameters)):
        raise RequestError(
            400,
            f"Invalid schema for function '{name}': {problem}",
            where,
            "invalid_function_parameters",
        )


def strict_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """What strict mode refuses in ``schema`` (open objects, optional keys), else ``None``."""
    if isinstance(schema, list):
        return next((p for item in schema if (p := strict_problem(item, context))), None)
    if not isinstance(schema, dict):
        return None
    where = f"In context={context!r}, " if context else "In context=(), "
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"{where}'additionalProperties' is required to be supplied and to be false."
        required = schema.get("required")
        missing = [key for key in schema.get("properties") or {} if key not in (required or ())]
        if not isinstance(required, list) or missing:
            return (
                f"{where}'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0] if missing else ''}'."
            )
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                if problem := strict_problem(sub, (*context, key, name)):
                    return problem
        elif key in ("items", "anyOf", "allOf"):
            if problem := strict_problem(value, (*context, key)):
                return problem
    return None


def _validate_tool_choice(choice: Any, tools: list[Any]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise RequestError(
                400,
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
                "invalid_value",
            )
        return
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    names = [(t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)]
    if choice.get("type") == "function" and name not in names:
        raise RequestError(
            400,
            f"Invalid value for 'tool_choice': function '{name}' is not one of the 'tools'.",
            "tool_choice",
            "invalid_value",
        )


def _validate_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        if "json" not in json.dumps(body["messages"]).lower():
            raise RequestError(
                400,
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                "messages",
                None,
            )
        return
    if kind == "text":
        return
    if kind != "json_schema":
        raise RequestError(
            400,
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', "
            "and 'text'.",
            "response_format.type",
            "invalid_value",
        )
    spec = response_format.get("json_schema")
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str):
        raise RequestError(
            400,
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    if not _FUNCTION_NAME.fullmatch(name):
        raise RequestError(
            400,
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    schema = spec.get("schema")
    if spec.get("strict") is True and (problem := strict_problem(schema)):
        raise RequestError(
            400,
            f"Invalid schema for response_format '{name}': {problem}",
            "response_format",
            None,
        )
