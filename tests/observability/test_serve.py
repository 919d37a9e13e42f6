"""``isthmus serve``: --log-format overrides the file; the hub's app runs on the draining
server with the observability settings, any other app on plain uvicorn; the drain."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from federation import cli
from federation.observability import shutdown
from federation.observability.health import Readiness
from federation.observability.shutdown import GracefulServer, run_server
from federation.web.app import create_app
from tests.observability.support import make_hub, settings

CONFIG = {"issuer": "https://hub.example.com", "observability": {"log_format": "json"}}


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> Any:
    started: list[Any] = []
    monkeypatch.setattr(cli, "_run", lambda app, host, port: started.append(app))
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(cli.app, ["serve", "--config", str(path), *options])
    assert result.exit_code == 0, result.output
    (app,) = started
    return app


def test_log_format_option_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_file = serve(tmp_path, monkeypatch)
    assert as_file.state.observability.settings.log_format == "json"
    as_option = serve(tmp_path, monkeypatch, "--log-format", "text")
    assert as_option.state.observability.settings.log_format == "text"


def test_the_hub_runs_on_the_draining_server(monkeypatch: pytest.MonkeyPatch) -> None:
    servers: list[GracefulServer] = []
    monkeypatch.setattr(GracefulServer, "run", lambda self, sockets=None: servers.append(self))
    configured: list[tuple[str, str]] = []
    monkeypatch.setattr(
        shutdown,
        "configure_logging",
        lambda fmt, level, audit_lines: configured.append((fmt, level)),
    )
    config = settings(
        observability={"drain_seconds": 7, "graceful_timeout_seconds": 9, "log_format": "text"}
    )
    run_server(create_app(hub=make_hub(config)), "127.0.0.1", 8080)
    (server,) = servers
    assert server.drain_seconds == 7
    assert server.config.timeout_graceful_shutdown == 9
    assert server.config.access_log is False
    assert configured == [("text", "info")]


def test_any_other_app_runs_on_plain_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(options))
    run_server(object(), "127.0.0.1", 8081)
    assert ran == [{"host": "127.0.0.1", "port": 8081, "log_level": "info", "proxy_headers": False}]


class Backends:
    async def ping(self) -> None:
        return None


async def test_sigterm_drains_before_uvicorn_stops_sigint_does_not() -> None:
    readiness = Readiness(Backends(), Backends(), timeout=1)  # type: ignore[arg-type]
    server = GracefulServer(uvicorn.Config(object()), readiness, drain_seconds=30)
    server.handle_exit(signal.SIGTERM, None)
    assert readiness.draining and server.draining and not server.should_exit
    assert not await server.on_tick(1)  # still serving
    server.handle_exit(signal.SIGTERM, None)  # a second one ends the drain
    assert server.should_exit and not server.draining

    readiness = Readiness(Backends(), Backends(), timeout=1)  # type: ignore[arg-type]
    interactive = GracefulServer(uvicorn.Config(object()), readiness, drain_seconds=30)
    interactive.handle_exit(signal.SIGINT, None)  # Ctrl-C: no drain
    assert readiness.draining and interactive.should_exit


async def test_the_drain_ends_on_its_own() -> None:
    readiness = Readiness(Backends(), Backends(), timeout=1)  # type: ignore[arg-type]
    now = [1000.0]
    config = uvicorn.Config(object())
    server = GracefulServer(config, readiness, drain_seconds=5, clock=lambda: now[0])
    server.handle_exit(signal.SIGTERM, None)
    now[0] += 4.9
    assert not await server.on_tick(1)
    now[0] += 0.2
    assert await server.on_tick(2)  # uvicorn's graceful shutdown begins
