from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer
from tests.support.seaweed import SeaweedS3


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start extra servers: `server_factory("--upstream", url, workers=2)`."""
    started: list[LiveServer] = []

    def make(*args: str, workers: int = 1, data_dir: Path | None = None,
             env: dict[str, str] | None = None) -> LiveServer:
        d = data_dir or tmp_path / f"data{len(started)}"
        d.mkdir(parents=True, exist_ok=True)
        s = LiveServer(d, *args, workers=workers, env=env)
        started.append(s)  # before start(): a server that fails to start is still stopped
        s.start()
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    """A fresh server with embedded defaults (filesystem + SQLite) for one test."""
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole test module, when tests do not disturb each other."""
    d = tmp_path_factory.mktemp("shared") / "data"
    d.mkdir()
    s = LiveServer(d)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """One real SeaweedFS S3 for the session (started on first use; fails with its log)."""
    s = SeaweedS3()
    s.start()
    yield s
    s.cleanup()
