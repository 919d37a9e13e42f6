"""``listen.server: granian``: ``isthmus serve`` on granian's embedded server answers as on
uvicorn (probes, forward-auth, pages) and stops the same way: SIGTERM turns /readyz to 503
while the hub still serves, then the listener closes, the request in flight finishes (or is
cancelled after the graceful timeout), the lifespan ends (the audit trail is complete) and
the process exits 0. Without the extra installed, a configuration problem says how to
install it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from federation import cli
from federation.errors import ConfigError
from federation.observability import shutdown
from federation.observability.shutdown import run_server, server_of
from federation.settings import Settings
from federation.web.app import create_app
from tests.observability.support import make_hub, settings
from tests.observability.test_shutdown import (
    GatedUpstream,
    audited_request_ids,
    drain_with_a_request_in_flight,
    isthmus_serve,
    serve_gated,
    session_cookie,
    write_config,
)
from tests.peers.common import free_port, missing


@pytest.fixture
def granian_installed() -> None:
    try:
        import granian.server.embed  # noqa: F401
    except ImportError:
        missing("granian", "pip install -e '.[test]' (the granian extra)")


@pytest.fixture
def gated() -> Iterator[tuple[GatedUpstream, str]]:
    upstream = GatedUpstream()
    with serve_gated(upstream) as url:
        yield upstream, url


def granian_config(tmp_path: Path, port: int, upstream: str, **observability: Any) -> Path:
    """test_shutdown's configuration, on granian; 127.0.0.1 a trusted edge (forward-auth)."""
    path = write_config(tmp_path, port, upstream)
    config = yaml.safe_load(path.read_text())
    config["listen"]["server"] = "granian"
    config["trusted_proxies"] = ["127.0.0.1/32"]
    config["observability"].update(observability)
    path.write_text(yaml.safe_dump(config))
    return path


def log_entries(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]  # every line JSON


@pytest.mark.integration
@pytest.mark.usefixtures("granian_installed")
def test_a_hub_on_granian_answers_probes_forward_auth_and_pages(
    tmp_path: Path, gated: tuple[GatedUpstream, str]
) -> None:
    _, upstream_url = gated
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr.log"
    with isthmus_serve(granian_config(tmp_path, port, upstream_url), port, log) as process:
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        login = httpx.get(f"{base}/login", params={"rd": "/"}, timeout=5)
        assert login.status_code == 200
        assert 'name="csrf"' in login.text and 'name="email"' in login.text
        cookie = asyncio.run(session_cookie(base))
        edge = {
            "X-Original-Method": "GET",
            "X-Original-URI": "/orders/x?code=secret",
            "X-Forwarded-Host": f"127.0.0.1:{port}",
        }
        allowed = httpx.get(
            f"{base}/forward-auth",
            headers={**edge, "Cookie": f"isthmus_session={cookie}"},
            timeout=5,
        )
        assert allowed.status_code == 200, allowed.text
        assert httpx.get(f"{base}/forward-auth", headers=edge, timeout=5).status_code == 401
        process.send_signal(signal.SIGINT)  # no drain; nothing in flight: stops at once
        assert process.wait(10) == 0, log.read_text()

    entries = log_entries(log)
    assert any(e["logger"].startswith("_granian") for e in entries)  # granian's, as JSON
    access = [e for e in entries if e["logger"] == "granian.access"]
    auth = [e for e in access if e["path"] == "/forward-auth"]
    assert [e["status"] for e in auth] == [200, 401]
    assert all(e["method"] == "GET" and e["client"] == "127.0.0.1" for e in auth)
    assert any(e["path"] == "/login" and e["status"] == 200 for e in access)
    assert "secret" not in log.read_text()


@pytest.mark.integration
@pytest.mark.usefixtures("granian_installed")
def test_sigterm_on_granian_drains_then_lets_the_request_in_flight_finish(
    tmp_path: Path, gated: tuple[GatedUpstream, str]
) -> None:
    upstream, upstream_url = gated
    port = free_port()
    log = tmp_path / "stderr.log"
    # at once: the graceful timeout (15 s) bounds the wait, it does not set it
    drained = drain_with_a_request_in_flight(
        granian_config(tmp_path, port, upstream_url), port, log, upstream, exit_within=10
    )
    assert drained.exit_status == 0, log.read_text()
    # the lifespan ran to its end after the request in flight
    assert drained.messages.index("Application shutdown complete.") > max(
        i for i, e in enumerate(drained.entries) if e.get("path") == "/orders/slow"
    )
    slow_id = drained.answer.headers["x-request-id"]
    # the audit sink flushed: the decision on the request that finished during the stop
    assert slow_id in asyncio.run(audited_request_ids(tmp_path / "registry.db"))


@pytest.mark.integration
@pytest.mark.usefixtures("granian_installed")
def test_granian_cancels_what_outlives_the_graceful_timeout(
    tmp_path: Path, gated: tuple[GatedUpstream, str]
) -> None:
    upstream, upstream_url = gated
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr.log"
    config = granian_config(
        tmp_path, port, upstream_url, drain_seconds=0, graceful_timeout_seconds=1
    )
    with isthmus_serve(config, port, log) as process:
        cookie = asyncio.run(session_cookie(base))
        headers = {"Cookie": f"isthmus_session={cookie}"}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.get, f"{base}/orders/slow", headers=headers, timeout=30)
            assert upstream.arrived.get(timeout=10) == "/slow"
            process.send_signal(signal.SIGTERM)  # no drain: the listener closes at once
            answer = pending.result(timeout=20)  # never released upstream: cancelled
        assert answer.status_code == 500
        assert process.wait(20) == 0, log.read_text()

    messages = [e.get("message", "") for e in log_entries(log)]
    assert "graceful stop: cancelled 1 request(s) still in flight" in messages
    assert messages[-1] == "Application shutdown complete."


def test_the_hub_chooses_its_server_uvicorn_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().listen.server == "uvicorn"
    on_uvicorn = create_app(hub=make_hub(settings()))
    assert server_of(on_uvicorn) == "uvicorn"
    assert server_of(object()) == "uvicorn"

    ran: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "federation.observability.granian_server.run_granian",
        lambda app, host, port, observability: ran.append((host, port)) or 0,
    )
    monkeypatch.setattr(shutdown.GracefulServer, "run", lambda self, sockets=None: None)
    on_granian = create_app(hub=make_hub(settings(listen={"server": "granian"})))
    run_server(on_granian, "127.0.0.1", 8082)
    run_server(on_uvicorn, "127.0.0.1", 8083)
    assert ran == [("127.0.0.1", 8082)]


@pytest.fixture
def without_granian(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the granian extra were not installed: importing it fails."""
    for name in [m for m in sys.modules if m == "granian" or m.startswith("granian.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "granian", None)


@pytest.mark.usefixtures("without_granian")
def test_granian_chosen_but_not_installed_is_a_configuration_problem(tmp_path: Path) -> None:
    path = tmp_path / "isthmus.yaml"
    path.write_text(
        yaml.safe_dump({"issuer": "https://hub.example.com", "listen": {"server": "granian"}})
    )
    result = CliRunner().invoke(cli.app, ["serve", "--config", str(path)])
    assert result.exit_code == 1
    assert f"{path}: 1 configuration problem:" in result.output
    assert "listen.server: granian is not installed: pip install 'isthmus[granian]'" in (
        result.output
    )

    app = create_app(hub=make_hub(settings(listen={"server": "granian"})))
    with pytest.raises(ConfigError) as raised:
        run_server(app, "127.0.0.1", 8084)
    assert raised.value.problems[0][0] == "listen.server"


class StubServer:
    """granian's embedded server, as far as the signals reach it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


@pytest.fixture
def stub_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real server, no logging reconfigured in the test process."""
    import granian.server.embed

    from federation.observability import granian_server

    monkeypatch.setattr(granian.server.embed, "Server", StubServer)
    monkeypatch.setattr(granian_server, "configure_logging", lambda *a, **k: None)


@pytest.mark.usefixtures("granian_installed", "stub_server")
async def test_sigterm_drains_first_a_second_signal_cuts_it_short_a_third_forces() -> None:
    from federation.observability.granian_server import GranianHub

    app = create_app(hub=make_hub(settings(observability={"drain_seconds": 30})))
    observability = app.state.observability
    served = GranianHub(app, "127.0.0.1", free_port(), observability)
    stub = served.server
    served.on_signal(signal.SIGTERM)
    assert (served.stage, stub.stops) == ("draining", 0)  # still serving, not ready
    assert observability.readiness.draining
    served.on_signal(signal.SIGTERM)
    assert (served.stage, stub.stops) == ("stopping", 1)  # the listener closes now
    served.on_signal(signal.SIGINT)
    assert served.stage == "forced"  # requests in flight are cancelled at once
    assert stub.stops == 1


@pytest.mark.usefixtures("granian_installed", "stub_server")
async def test_sigint_never_drains() -> None:
    from federation.observability.granian_server import GranianHub

    app = create_app(hub=make_hub(settings(observability={"drain_seconds": 30})))
    served = GranianHub(app, "127.0.0.1", free_port(), app.state.observability)
    stub = served.server
    served.on_signal(signal.SIGINT)
    assert (served.stage, stub.stops) == ("stopping", 1)
