"""The ``isthmus`` command line: demo, serve, check-config, signing keys, and the admin
commands of :mod:`federation.cli_admin` (apply, export, audit, partners, apps, tokens).

Expected failures (a bad configuration, a missing key file) print a short report and exit
with status 1; they never show a traceback.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Protocol

import typer

from federation import cli_admin
from federation.errors import ConfigError
from federation.keys import KeySet, load_or_create, rotate_file
from federation.migrate import cli as migrate_cli
from federation.settings import Settings, load_settings

app = typer.Typer(
    name="isthmus",
    help="Isthmus: the extranet federation and SSO hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="Manage the hub's signing keys (a JSON key set file).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

DEMO_ORIGIN = "http://127.0.0.1:8080"
DEMO_ORDERS_UPSTREAM = "http://127.0.0.1:8081"  # demo.yaml's orders upstream, moved at start
KeyAlg = Literal["RS256", "ES256"]


def main() -> None:
    app()


# --- helpers ----------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def problem_report(source: str, error: ConfigError) -> str:
    """Every problem of a configuration, one line each with the path of the bad key."""
    count = len(error.problems)
    lines = [f"{source}: {count} configuration problem{'s' if count != 1 else ''}:"]
    lines += [f"  {path or '<root>'}: {message}" for path, message in error.problems]
    return "\n".join(lines)


def summary(settings: Settings) -> str:
    connections = sum(1 for _ in settings.connections())
    return (
        f"configuration OK: {_plural(len(settings.partners), 'partner')}, "
        f"{_plural(connections, 'connection')}, {_plural(len(settings.clients), 'client')}"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _load_or_exit(config: Path, *, err: bool = True) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(problem_report(str(config), exc), err=err)
        raise typer.Exit(1) from None


# --- check-config and serve ---------------------------------------------------------------


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="The YAML configuration file.")],
) -> None:
    """Validate a configuration: report every problem at once, with the path of each bad key.

    ISTHMUS_* environment variables override the file, as at start-up.
    """
    settings = _load_or_exit(file, err=False)  # the report is this command's output
    typer.echo(summary(settings))


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="The YAML configuration file.")],
    log_format: Annotated[
        Literal["json", "text"] | None,
        typer.Option(help="Log lines as JSON objects or text (else observability.log_format)."),
    ] = None,
) -> None:
    """Run the hub with the given configuration (ISTHMUS_* variables override the file).

    SIGTERM drains, then stops gracefully (observability.drain_seconds and
    graceful_timeout_seconds; docs/operations.md)."""
    settings = _load_or_exit(config)
    if settings.listen.server == "granian":
        from federation.observability.granian_server import require_granian

        try:
            require_granian()
        except ConfigError as exc:
            typer.echo(problem_report(str(config), exc), err=True)
            raise typer.Exit(1) from None
    if log_format is not None:
        observability = settings.observability.model_copy(update={"log_format": log_format})
        settings = settings.model_copy(update={"observability": observability})
    from federation.web.app import create_app

    hub_app = _create_or_exit(lambda: create_app(settings))
    typer.echo(f"isthmus: {summary(settings)}; issuer {settings.issuer}")
    _run(hub_app, settings.listen.host, settings.listen.port)


def _create_or_exit(factory: Any) -> Any:
    try:
        return factory()
    except (OSError, ValueError, KeyError) as exc:
        # A key file that cannot be read or parsed, a store URL that cannot be used...
        _fail(f"cannot start the hub: {exc}")


def _run(asgi_app: Any, host: str, port: int) -> None:
    # The hub's app: its logging, drain on SIGTERM and graceful timeout; others: uvicorn's.
    from federation.observability.shutdown import run_server

    run_server(asgi_app, host, port)


# --- demo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    email: str
    partner: str
    note: str


def demo_settings(host: str = "127.0.0.1", port: int = 8080, orders_port: int = 8081) -> Settings:
    """The packaged demo configuration, moved to ``host:port`` (the hub) and ``orders_port``
    (the proxied orders app, always on 127.0.0.1); ISTHMUS_* is ignored."""
    text = resources.files("federation.demo").joinpath("demo.yaml").read_text(encoding="utf-8")
    replacements = {
        DEMO_ORIGIN: demo_origin(host, port),
        DEMO_ORDERS_UPSTREAM: f"http://127.0.0.1:{orders_port}",
        "host: 127.0.0.1": f"host: {json.dumps(host)}",
        "port: 8080": f"port: {port}",
    }
    # One pass: a replacement is never replaced again (port 8081 for the hub, say).
    pattern = re.compile("|".join(re.escape(old) for old in replacements))
    text = pattern.sub(lambda m: replacements[m.group(0)], text)
    with tempfile.TemporaryDirectory(prefix="isthmus-demo-") as tmp:
        path = Path(tmp) / "demo.yaml"
        path.write_text(text, encoding="utf-8")
        return load_settings(path, env={})


def demo_origin(host: str, port: int) -> str:
    """The URL browsers use: a wildcard listen address is reached through the loopback."""
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    if ":" in public_host:
        public_host = f"[{public_host}]"
    return f"http://{public_host}:{port}"


def demo_users(settings: Settings) -> list[DemoUser]:
    users: list[DemoUser] = []
    for partner in settings.partners:
        several = len(partner.connections) > 1
        for connection in partner.connections:
            for user in getattr(connection, "users", ()):
                note = f"{partner.kind.value}, {partner.status.value}"
                if several:
                    note += ", two sign-in methods"
                users.append(DemoUser(user.email, partner.name, note))
    return users


def build_demo_app(settings: Settings) -> Any:
    """The hub with the demo app mounted at /demo-app (the hub's own app is not modified),
    and the proxied orders app, served on its own port while the hub runs (lifespan)."""
    from urllib.parse import urlsplit

    from federation.demo.app import DemoAppConfig, create_demo_app
    from federation.demo.orders import OrdersServer, create_orders_app
    from federation.web.app import create_app

    hub_app = create_app(settings)
    client = next(c for c in settings.clients if c.client_id == "demo-app")
    assert client.client_secret is not None
    origin = settings.issuer.rstrip("/")
    demo = create_demo_app(
        DemoAppConfig(
            issuer=origin,
            client_id=client.client_id,
            client_secret=client.client_secret,
            redirect_uri=client.redirect_uris[0],
            post_logout_redirect_uri=client.post_logout_redirect_uris[0],
            scopes=client.scopes,
        )
    )
    orders = next(a for a in settings.apps if a.id == "orders")
    upstream = urlsplit(orders.upstreams[0])
    orders_app = create_orders_app(
        origin,
        app_id=orders.id,
        prefix=orders.path_prefix,
        assertion_header=orders.assertion_header or "X-Isthmus-Assertion",
    )
    orders_server = OrdersServer(orders_app, upstream.hostname or "127.0.0.1", upstream.port or 80)
    return PrefixDispatcher("/demo-app", demo, hub_app, companions=(orders_server,))


class Companion(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class PrefixDispatcher:
    """Send ``/demo-app`` and below to the demo app, everything else (and lifespan) to the hub.

    ``companions`` (the demo's orders server) start before the hub's lifespan starts up and
    stop before it shuts down: they live in the same event loop as the hub.
    """

    def __init__(
        self, prefix: str, mounted: Any, default: Any, companions: tuple[Companion, ...] = ()
    ) -> None:
        from starlette.routing import Mount

        self.prefix = prefix
        self.mount = Mount(prefix, app=mounted)
        self.default = default
        self.companions = companions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import RedirectResponse
        from starlette.routing import Match

        if scope["type"] in ("http", "websocket"):
            path = scope.get("path", "")
            if path == self.prefix:
                await RedirectResponse(self.prefix + "/", status_code=307)(scope, receive, send)
                return
            match, child_scope = self.mount.matches(scope)
            if match is Match.FULL:
                await self.mount.handle({**scope, **child_scope}, receive, send)
                return
        elif scope["type"] == "lifespan" and self.companions:
            await self.default(scope, self._lifespan_receive(receive), send)
            return
        await self.default(scope, receive, send)

    def _lifespan_receive(self, receive: Any) -> Any:
        started: list[Companion] = []

        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # A failure here fails the start-up (the hub reports it and exits).
                try:
                    for companion in self.companions:
                        await companion.start()
                        started.append(companion)
                except BaseException:
                    while started:
                        await started.pop().stop()
                    raise
            elif message["type"] == "lifespan.shutdown":
                while started:
                    await started.pop().stop()
            return message

        return wrapped


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8080,
    orders_port: Annotated[
        int,
        typer.Option(
            help="127.0.0.1 port of the proxied orders app (0: any free port).",
            min=0,
            max=65535,
        ),
    ] = 0,
) -> None:
    """Run a self-contained demo: demo partners on a mock IdP, an in-memory hub, a demo app
    and a proxied app guarded by a per-partner policy."""
    try:
        settings = demo_settings(host, port, orders_port or _free_loopback_port())
    except ConfigError as exc:  # only if the packaged file and the options disagree
        typer.echo(problem_report("demo configuration", exc), err=True)
        raise typer.Exit(1) from None
    asgi_app = _create_or_exit(lambda: build_demo_app(settings))
    typer.echo(demo_banner(settings))
    _run(asgi_app, host, port)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_banner(settings: Settings) -> str:
    origin = settings.issuer.rstrip("/")
    unknown = "someone@unknown.example"
    width = max(len(unknown), *(len(u.email) for u in demo_users(settings)))
    orders = next(a for a in settings.apps if a.id == "orders")
    app_url = f"{origin}{orders.path_prefix.rstrip('/')}"
    lines = [
        "",
        "Isthmus demo — in-memory store and keys, demo partners on a mock IdP (no passwords).",
        "",
        f"  Open the demo app:   {origin}/demo-app/",
        f"  or the hub itself:   {origin}/",
        "",
        "  Type one of these work emails on the sign-in page:",
    ]
    lines += [f"    {u.email:<{width}}  {u.partner} ({u.note})" for u in demo_users(settings)]
    lines += [
        f"    {unknown:<{width}}  no such partner: the sign-in page says so",
        "",
        f"  The proxied app (policy per partner): {app_url}/",
        f"    open it as alice@acme.example, then {app_url}/admin (denied: staff only);",
        f"    as carol@globex.example only {app_url}/reports is allowed;",
        "    erin@initech.example may open everything.",
        f"    The app itself listens on {orders.upstreams[0]}: called directly it answers 401.",
        "",
        "  Press Ctrl+C to stop. Nothing is kept.",
        "",
    ]
    return "\n".join(lines)


# --- keys ----------------------------------------------------------------------------------


def _key_path(path: Path | None, config: Path | None) -> Path:
    if path is not None and config is not None:
        _fail("give either --path or --config, not both")
    if path is not None:
        return path
    if config is None:
        _fail("give --path FILE (the key set) or --config FILE (reads keys.path)")
    settings = _load_or_exit(config)
    if settings.keys.path is None:
        _fail(f"{config}: keys.path is not set, so the hub keeps its keys in memory only")
    return settings.keys.path


def _read_keyset(path: Path) -> KeySet:
    if not path.exists():
        _fail(f"no key set at {path}; create one with: isthmus keys init --path {path}")
    try:
        return KeySet.from_json(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except (ValueError, KeyError, TypeError) as exc:
        _fail(f"{path} is not an Isthmus key set: {exc}")


PathOpt = Annotated[Path | None, typer.Option("--path", "-p", help="The JSON key set file.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="A configuration file: use its keys.path.")
]


@keys_app.command("init")
def keys_init(
    path: PathOpt = None,
    config: ConfigOpt = None,
    alg: Annotated[str, typer.Option("--alg", help="RS256 or ES256.")] = "RS256",
) -> None:
    """Create a key set (current + next) in a new file, mode 0600."""
    algorithm = _algorithm(alg)
    target = _key_path(path, config)
    if target.exists():
        _fail(f"{target} already exists; rotate it with: isthmus keys rotate --path {target}")
    try:
        keys = load_or_create(target, algorithm)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror}")
    typer.echo(f"created {target}")
    _print_table(keys)


@keys_app.command("rotate")
def keys_rotate(
    path: PathOpt = None,
    config: ConfigOpt = None,
    alg: Annotated[
        str | None, typer.Option("--alg", help="Algorithm of the new next key (default: same).")
    ] = None,
) -> None:
    """Rotate: next becomes current, current becomes previous, a new next is made.

    Running hubs pick the new set up within a second; tokens signed by the old current key
    keep validating because it stays published as previous.
    """
    algorithm = _algorithm(alg) if alg is not None else None
    target = _key_path(path, config)
    before = _read_keyset(target)
    try:
        keys = rotate_file(target, algorithm)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror}")
    typer.echo(f"rotated {target}")
    typer.echo(f"  current:  {keys.current.kid} (was next)")
    typer.echo(f"  next:     {keys.next.kid} (new)")
    typer.echo(f"  previous: {before.current.kid} (was current)")
    if before.previous is not None:
        typer.echo(f"  retired:  {before.previous.kid} (no longer published)")


@keys_app.command("show")
def keys_show(path: PathOpt = None, config: ConfigOpt = None) -> None:
    """Show the key set: kid, algorithm, state and creation time of each key."""
    _print_table(_read_keyset(_key_path(path, config)))


def _algorithm(value: str) -> KeyAlg:
    upper = value.upper()
    if upper == "RS256":
        return "RS256"
    if upper == "ES256":
        return "ES256"
    _fail(f"--alg must be RS256 or ES256, not {value!r}")


def _print_table(keys: KeySet) -> None:
    rows = [("current", keys.current), ("next", keys.next)]
    if keys.previous is not None:
        rows.append(("previous", keys.previous))
    kid_width = max(len("kid"), *(len(k.kid) for _, k in rows))
    typer.echo(f"{'kid':<{kid_width}}  {'alg':<5}  {'state':<8}  created")
    for state, key in rows:
        created = datetime.fromtimestamp(key.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        typer.echo(f"{key.kid:<{kid_width}}  {key.alg:<5}  {state:<8}  {created}")


# --- SAML connections ---------------------------------------------------------------------

saml_app = typer.Typer(help="SAML partner connections.", no_args_is_help=True)
app.add_typer(saml_app, name="saml")


@saml_app.command("certs")
def saml_certs(
    config: Annotated[Path, typer.Option("--config", "-c", help="The YAML configuration file.")],
    days: Annotated[
        int, typer.Option("--days", min=0, help="Fail when a certificate expires within this.")
    ] = 30,
) -> None:
    """List the IdP and SP certificates of every SAML connection with their expiry.

    Exits 1 when one expires within --days (or its metadata cannot be read): run it from
    monitoring. During an IdP key rollover the old and the new certificate both appear.
    """
    from connectors.saml import certificates
    from federation.settings import SamlConnectionSettings

    settings = _load_or_exit(config)
    now = datetime.now(UTC)
    failing = 0
    for partner, connection in settings.connections():
        if not isinstance(connection, SamlConnectionSettings):
            continue
        try:
            found = certificates(connection)
        except (OSError, ValueError) as exc:
            typer.echo(f"{partner.id}/{connection.id}: cannot read certificates: {exc}", err=True)
            failing += 1
            continue
        for cert in found:
            left = (cert.not_after - now).days
            soon = cert.expires_within(days, now)
            failing += soon
            mark = "EXPIRES SOON" if soon else "ok"
            typer.echo(
                f"{partner.id}/{connection.id} {cert.whose} {cert.subject} "
                f"not_after={cert.not_after.isoformat()} ({left} days) {mark}"
            )
    if failing:
        typer.echo(f"{failing} certificate problem(s) within {days} days", err=True)
        raise typer.Exit(1)


# --- policies -----------------------------------------------------------------------------

policy_app = typer.Typer(
    help="Access policies: explain a decision, run policy test cases.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@policy_app.command("explain")
def policy_explain(
    config: Annotated[Path, typer.Option("--config", "-c", help="The YAML configuration file.")],
    app_id: Annotated[str, typer.Option("--app", help="The app id.")],
    path: Annotated[str, typer.Option("--path", help="The raw request path.")],
    email: Annotated[str | None, typer.Option("--email", help="The user's email.")] = None,
    partner: Annotated[
        str | None, typer.Option("--partner", help="Partner id (default: by email domain).")
    ] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    groups: Annotated[str | None, typer.Option("--groups", help="Comma-separated.")] = None,
    roles: Annotated[str | None, typer.Option("--roles", help="Comma-separated.")] = None,
    acr: Annotated[str | None, typer.Option("--acr")] = None,
    amr: Annotated[str | None, typer.Option("--amr", help="Comma-separated.")] = None,
    method: Annotated[str, typer.Option("--method")] = "GET",
    host: Annotated[str | None, typer.Option("--host", help="Default: the app's host.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="The client address.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="ISO time (default: now).")] = None,
) -> None:
    """Can this user make this request on this app, and why: ALLOW or DENY, the reasons,
    and how every rule of the app's policy fared."""
    import policies
    from policies.testing import CaseFileError, decide_raw, make_subject, parse_time

    settings = _load_or_exit(config)
    target = next((a for a in settings.apps if a.id == app_id), None)
    if target is None:
        _fail(f"no app {app_id!r} in {config} (apps: {', '.join(a.id for a in settings.apps)})")
    policy = _load_app_policy_or_exit(target)
    try:
        subject = make_subject(
            {p.id: p for p in settings.partners},
            email=email,
            partner=partner,
            connection=connection,
            groups=_csv(groups),
            roles=_csv(roles),
            acr=acr,
            amr=_csv(amr),
        )
        now = parse_time(at) if at else datetime.now(UTC)
    except (CaseFileError, ValueError) as exc:
        _fail(str(exc))
    decision, normalized = decide_raw(
        policy,
        subject,
        method=method.upper(),
        raw_path=path,
        host=host or (target.hosts[0] if target.hosts else "localhost"),
        source_ip=ip,
        now=now,
        case_insensitive=target.case_insensitive_paths,
    )
    who = email or subject.identity.subject
    kind = subject.partner.kind.value
    verdict = "ALLOW" if decision.allowed else "DENY"
    typer.echo(f"{verdict} {method.upper()} {path} on {app_id} for {who}")
    typer.echo(f"  partner {subject.partner.id} ({kind}, {subject.partner.status.value})")
    if normalized is not None and normalized != path:
        typer.echo(f"  normalized path: {normalized}")
    typer.echo("reasons:")
    for reason in decision.reasons:
        rule = f" [rule {reason.rule}]" if reason.rule else ""
        shown = " (shown to the user)" if reason.public else ""
        typer.echo(f"  - {reason.code}{rule}: {reason.message}{shown}")
    if normalized is None or not policy.rules:
        return
    request = policies.AccessRequest(method.upper(), normalized, "", ip, now)
    typer.echo("rules:")
    width = max(len(r.name) for r in policy.rules)
    for trace in policy.explain(subject, request).traces:
        rule = trace.rule
        if not trace.applies:
            only = sorted(rule.partner.partners) if rule.partner else []
            state = f"not looked at: only for {', '.join(only)}"
        elif trace.matched:
            state = "matched"
        else:
            assert trace.failing is not None
            state = f"no match: requires {trace.failing.describe()}; had {trace.observed}"
        typer.echo(f"  {rule.name:<{width}}  {rule.effect:<5}  {state}")


def _load_app_policy_or_exit(target: Any) -> Any:
    import policies

    try:
        if target.policy_file is not None:
            return policies.load_policy(
                Path(target.policy_file),
                name=str(target.policy_file),
                app_id=target.id,
                case_insensitive_paths=target.case_insensitive_paths,
            )
        if target.policy is not None:
            return policies.load_policy(
                target.policy,
                name=f"apps.{target.id}.policy",
                app_id=target.id,
                case_insensitive_paths=target.case_insensitive_paths,
            )
    except policies.PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    return policies.DENY_ALL


@policy_app.command("test")
def policy_test(
    file: Annotated[Path, typer.Argument(help="A YAML file of policy test cases.")],
) -> None:
    """Run policy test cases written as data (identity + request → expected decision).

    Prints one line per case; exits 1 when a case fails or the file or policy is wrong.
    """
    import policies
    from policies.testing import CaseFileError, run_file

    try:
        results = run_file(file)
    except CaseFileError as exc:
        _fail(str(exc))
    except policies.PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    failed = [r for r in results if not r.passed]
    for result in results:
        verdict = "ALLOW" if result.decision.allowed else "DENY"
        mark = "ok  " if result.passed else "FAIL"
        typer.echo(f"{mark} {result.name}: {verdict} ({', '.join(result.decision.codes())})")
        for failure in result.failures:
            typer.echo(f"       {failure}")
    typer.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


# --- admin: apply, export, audit, partners, apps, tokens (federation/cli_admin.py) ---------

cli_admin.register(app)
migrate_cli.register(app)  # isthmus keycloak import (federation/migrate/cli.py)


if __name__ == "__main__":  # pragma: no cover
    main()
