"""Choosing the decoder: ``CHATSTREAM_JSON``, `set_decoder`, and msgspec missing or not loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chatstream import _json

HIDE_MSGSPEC = "import sys; sys.modules['msgspec'] = None; "
"""Makes ``import msgspec`` fail in a child interpreter, as if the extra were not installed."""


def run(code: str, decoder: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``CHATSTREAM_JSON`` set to ``decoder``."""
    env = {key: value for key, value in os.environ.items() if key != _json.ENV_VAR}
    if decoder is not None:
        env[_json.ENV_VAR] = decoder
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_set_decoder_switches_and_returns_the_decoder_in_use() -> None:
    assert _json.set_decoder("stdlib") == "stdlib"
    assert _json.get_decoder() == "stdlib"
    assert _json.loads('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert _json.set_decoder("msgspec") == "msgspec"
    assert _json.get_decoder() == "msgspec"
    assert _json.loads('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}


def test_set_decoder_none_reads_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_json.ENV_VAR, "stdlib")
    assert _json.set_decoder(None) == "stdlib"
    monkeypatch.setenv(_json.ENV_VAR, " msgspec ")
    assert _json.set_decoder(None) == "msgspec"
    monkeypatch.delenv(_json.ENV_VAR)
    assert _json.set_decoder(None) == "msgspec"  # installed: the default


@pytest.mark.parametrize("name", ["orjson", "fast", "", "MSGSPEC"])
def test_an_unknown_name_is_refused_and_changes_nothing(name: str) -> None:
    _json.set_decoder("stdlib")
    with pytest.raises(ValueError, match=r"set_decoder\(.*\) names no JSON decoder"):
        _json.set_decoder(name)  # type: ignore[arg-type]  # the misuse under test
    assert _json.get_decoder() == "stdlib"


@pytest.mark.parametrize(
    ("variable", "chosen"),
    [(None, "msgspec"), ("", "msgspec"), ("stdlib", "stdlib"), ("msgspec", "msgspec")],
)
def test_the_environment_variable_chooses(variable: str | None, chosen: str) -> None:
    result = run("from chatstream import _json; print(_json.get_decoder())", variable)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == chosen


def test_an_unknown_environment_value_fails_at_import() -> None:
    result = run("import chatstream.providers.openai", "orjson")
    assert result.returncode == 1
    assert "ValueError: CHATSTREAM_JSON='orjson' names no JSON decoder" in result.stderr


def test_msgspec_is_imported_at_the_first_decode_only() -> None:
    code = (
        "import sys\n"
        "import chatstream, chatstream.providers.openai, chatstream.providers.anthropic\n"
        "import chatstream.providers.ollama\n"
        "print('msgspec' in sys.modules)\n"
        "from chatstream import _json\n"
        "_json.loads('{}')\n"
        "print('msgspec' in sys.modules, _json.get_decoder())\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["False", "True msgspec"]


def test_without_msgspec_the_default_is_the_stdlib() -> None:
    code = (
        HIDE_MSGSPEC + "from chatstream import _json; "
        "print(_json.loads('[1, NaN]'), _json.get_decoder())"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, nan] stdlib"


def test_msgspec_asked_for_by_the_environment_but_missing_says_what_to_install() -> None:
    code = (
        HIDE_MSGSPEC + "from chatstream import _json\n"
        "try:\n"
        "    _json.loads('{}')\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.name, exc, sep='|')\n"
    )
    result = run(code, "msgspec")
    assert result.returncode == 0, result.stderr
    kind, name, message = result.stdout.strip().split("|")
    assert (kind, name) == ("ImportError", "msgspec")
    assert "CHATSTREAM_JSON=msgspec" in message
    assert message.endswith("pip install 'chatstream[fast]'")


def test_msgspec_asked_for_by_set_decoder_but_missing_changes_nothing() -> None:
    code = (
        HIDE_MSGSPEC + "from chatstream import _json\n"
        "_json.set_decoder('stdlib')\n"
        "try:\n"
        "    _json.set_decoder('msgspec')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "print(_json.get_decoder(), _json.loads('[1]'))\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    message, after = result.stdout.strip().split("\n")
    assert message.endswith("pip install 'chatstream[fast]'")
    assert after == "stdlib [1]"


def test_msgspec_missing_fails_a_stream_with_the_install_hint() -> None:
    # Through a real stream: the ImportError is not mistaken for bad JSON on the way out.
    code = (
        HIDE_MSGSPEC + "from chatstream.providers.openai import ChatOpenAI\n"
        "from chatstream.testing import OpenAIServer, ScriptedReply, serve_in_thread\n"
        "with serve_in_thread(OpenAIServer([ScriptedReply.from_text('Hi')])) as server:\n"
        "    model = ChatOpenAI(base_url=server.base_url, api_key='k')\n"
        "    try:\n"
        "        model.invoke('Hi')\n"
        "    except ImportError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "    finally:\n"
        "        model.close()\n"
    )
    result = run(code, "msgspec")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError ")
    assert result.stdout.strip().endswith("pip install 'chatstream[fast]'")
