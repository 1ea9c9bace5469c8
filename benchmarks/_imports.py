"""Section 6: import time, each statement in a fresh interpreter, interleaved.

The floor is chatstream's own dependencies; the figure that has a target is ``import
chatstream`` minus the empty interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from functools import partial

from ._measure import Group, interleave_sync, wall_group

SECTION = "import"
EMPTY = "empty interpreter"
FLOOR = "floor: aiohttp, anyio, pydantic, jsonpatch"
STATEMENTS = {
    EMPTY: "pass",
    FLOOR: "import aiohttp, anyio, pydantic, jsonpatch",
    "anyio, pydantic, jsonpatch (what import chatstream loads)": (
        "import anyio, pydantic, jsonpatch"
    ),
    "pydantic, anyio, jsonpatch and one one-field model class (pydantic's own floor)": (
        # Defining any model loads pydantic's schema machinery (and secrets, hmac, hashlib):
        # what every pydantic library pays once, before its own first class.
        "import anyio, jsonpatch, pydantic\nclass A(pydantic.BaseModel):\n    x: int"
    ),
    "chatstream": "import chatstream",
    "chatstream.providers.openai": "import chatstream.providers.openai",
    "langchain_core": "import langchain_core",
    "langchain_core BaseChatModel": "from langchain_core.language_models import BaseChatModel",
    "langchain_openai": "import langchain_openai",
    "openai": "import openai",
}


def _interpreter(statement: str, folder: str, env: dict[str, str]) -> None:
    # Not from the repository: only the installed packages are on the path.
    subprocess.run([sys.executable, "-c", statement], cwd=folder, check=True, env=env)


def _environment(folder: str) -> dict[str, str]:
    # Bytecode is cached, as for an installed package: with PYTHONDONTWRITEBYTECODE (set on
    # some machines) an editable install would compile every chatstream module on each start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(folder, "pycache")
    return env


def run(quick: bool) -> list[Group]:
    """Wall ms of each statement in a new interpreter, and the same minus the empty one."""
    with tempfile.TemporaryDirectory() as folder:
        env = _environment(folder)
        calls = {
            name: partial(_interpreter, code, folder, env) for name, code in STATEMENTS.items()
        }
        samples = interleave_sync(calls, 3 if quick else 10)  # the warm-up writes the .pyc files
    wall = wall_group(SECTION, "fresh interpreter ms", samples, unit="ms", scale=1e3)
    wall.floor = FLOOR
    empty = wall.median(EMPTY)
    over = Group(
        SECTION,
        "ms over the empty interpreter",
        "ms",
        {name: [value - empty for value in values] for name, values in wall.values.items()},
        floor=FLOOR,
    )
    return [wall, over]
