"""Development sessions: ``nox -s lint typecheck tests examples`` is what CI and the README run."""

from __future__ import annotations

import nox

nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

EXAMPLES = ["examples/quickstart.py"]


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict over the package, tests, benchmarks, examples and this file."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite under coverage (asyncio everywhere, trio too for the core)."""
    session.install("-e", ".[dev]")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--skip-covered", "--sort=cover")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example non-interactively on the offline default (no API key)."""
    session.install("-e", ".")
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "CHATSTREAM_PROVIDER": ""}
    for example in EXAMPLES:
        session.run("python", example, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed figures (printed tables; never asserted)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_core.py", *session.posargs)
