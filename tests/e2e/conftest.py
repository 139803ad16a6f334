"""End-to-end fixtures: the real local stack (``python -m infra.local``) as a subprocess
(started by ``tests/e2e/stack.py``), and an admin client of it (``tests/e2e/fleet.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.fleet import Api
from tests.e2e.stack import StackProcess, start_stack


@pytest.fixture()
def stack_factory(tmp_path: Path) -> Iterator:
    """Start extra stacks in a test (``stack_factory(home=…, **env)``); killed if left running."""
    started: list[StackProcess] = []

    def start(home: Path | None = None, **env: str) -> StackProcess:
        stack = start_stack(home or tmp_path / f"home-{len(started)}", **env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.kill()


@pytest.fixture(scope="session")
def local_stack_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """The session's stack (in-memory state); stopped with SIGTERM at the end."""
    stack = start_stack(tmp_path_factory.mktemp("fleetbox-home"))
    try:
        yield stack
    finally:
        code = stack.terminate()
        assert code == 0, f"the local stack exited with {code}\n{stack.log_text()[-4000:]}"


@pytest.fixture(scope="session")
def local_stack(local_stack_process: StackProcess) -> dict:
    """The parsed .fleetbox/local.json of the session's stack."""
    return local_stack_process.info


@pytest.fixture(scope="module")
def api(local_stack: dict):
    """An HTTP client of the session's stack, as its admin."""
    return Api(local_stack)


@pytest.fixture(scope="module")
def pid(api) -> str:
    """A fresh thing-model product per test module."""
    return api.product()
