"""oauth2-proxy beside the hub, for the forward-auth budget (``bench.proxy --oauth2-proxy``).

The budget: "forward-auth decision (valid session) ≥ oauth2-proxy's ``/oauth2/auth`` rate on
the same machine". This module

* finds an ``oauth2-proxy`` binary (``$OAUTH2_PROXY``, ``PATH``, the bench's own Go bin
  directory) or builds it with ``go install`` from the Go module proxy (a pinned version,
  into ``~/.cache/isthmus-bench/go``; nothing of it enters the repository);
* runs it on 127.0.0.1 with the hub as its OIDC provider (``--provider=oidc``, the hub's
  issuer, a confidential client registered in the hub for this run, PKCE S256, the cookie
  session store, ``--upstream=static://200``, ``--reverse-proxy``, ``--set-xauthrequest``
  so that ``/oauth2/auth`` answers with the user's identity headers as the hub does,
  request/auth logging off as the hub's access log is);
* scripts one browser login through it (httpx, redirects followed by hand):
  oauth2-proxy ``/oauth2/start`` → hub ``/oauth2/authorize`` → hub ``/login`` (POST the
  csrf field and the mock user's email) → ``/mock/acme-mock`` → ``/callback/acme-mock``
  with the chosen user → hub ``/oauth2/authorize`` → oauth2-proxy ``/oauth2/callback``
  (code exchange at the hub's token endpoint, ID token verified) → its session cookie.

Without Go (and no binary) the caller prints why and skips the target: a benchmark, not a
test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
# Pinned so that runs compare; the version Go resolved as @latest when first measured.
VERSION = "v7.15.6"
GO_CACHE = Path.home() / ".cache" / "isthmus-bench" / "go"
CLIENT_ID = "bench-oauth2-proxy"


class Unavailable(Exception):
    """oauth2-proxy can be neither found nor built here (the message says why)."""


def binary(build_timeout: float = 900) -> Path:
    """An oauth2-proxy binary: found, or built with ``go install MODULE@VERSION``."""
    for candidate in (
        os.environ.get("OAUTH2_PROXY"),
        shutil.which("oauth2-proxy"),
        str(GO_CACHE / "bin" / "oauth2-proxy"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        raise Unavailable(
            "oauth2-proxy not found and Go is not installed: set OAUTH2_PROXY=/path/to/binary, "
            f"or install Go and re-run (it builds {MODULE}@{VERSION})"
        )
    env = {
        **os.environ,
        "GOPATH": str(GO_CACHE),
        "GOBIN": str(GO_CACHE / "bin"),
        "GOFLAGS": "-mod=mod",
    }
    print(f"building {MODULE}@{VERSION} with {go} (GOPATH {GO_CACHE}) ...", flush=True)
    try:
        done = subprocess.run(
            [go, "install", f"{MODULE}@{VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=build_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"go install did not finish within {build_timeout:.0f} s") from exc
    built = GO_CACHE / "bin" / "oauth2-proxy"
    if done.returncode != 0 or not built.is_file():
        raise Unavailable(f"go install failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return built


def version(path: Path) -> str:
    """The module version the binary was built from (``go version -m``), else ``--version``."""
    go = shutil.which("go")
    if go:
        out = subprocess.run(
            [go, "version", "-m", str(path)], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            fields = line.split()
            if fields[:2] == ["mod", MODULE] and len(fields) >= 3:
                return f"{fields[2]} ({out.splitlines()[0].split(': ')[-1]})"
    own = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    return (own.stdout or own.stderr).strip()


def client_settings(port: int, secret: str) -> dict[str, object]:
    """The hub's OIDC client for oauth2-proxy listening on ``port``."""
    return {
        "client_id": CLIENT_ID,
        "name": "oauth2-proxy (bench)",
        "client_secret": secret,
        "redirect_uris": [f"http://127.0.0.1:{port}/oauth2/callback"],
        "scopes": ["openid", "email", "profile"],
    }


@contextmanager
def run(
    path: Path,
    port: int,
    issuer: str,
    secret: str,
    gomaxprocs: int | None = None,
    client_id: str = CLIENT_ID,
) -> Iterator[subprocess.Popen[bytes]]:
    """oauth2-proxy on 127.0.0.1:``port`` against the hub at ``issuer``; stopped on exit."""
    from bench.proxy import wait_port

    command = [
        str(path),
        "--provider=oidc",
        f"--oidc-issuer-url={issuer}",
        f"--client-id={client_id}",
        f"--client-secret={secret}",
        f"--redirect-url=http://127.0.0.1:{port}/oauth2/callback",
        "--scope=openid email profile",
        "--code-challenge-method=S256",
        f"--cookie-secret={secrets.token_hex(16)}",  # 32 bytes: AES-256
        "--cookie-secure=false",
        "--email-domain=*",
        "--upstream=static://200",
        f"--http-address=127.0.0.1:{port}",
        "--reverse-proxy",
        "--set-xauthrequest",
        "--skip-provider-button",
        "--request-logging=false",
        "--auth-logging=false",
    ]
    env = dict(os.environ)
    if gomaxprocs:
        env["GOMAXPROCS"] = str(gomaxprocs)
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        try:
            wait_port(port, timeout=20)
        except TimeoutError:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            raise Unavailable(f"oauth2-proxy did not start: {err.decode()[-2000:]}") from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def login(port: int, email: str, user: str) -> str:
    """One scripted browser login through oauth2-proxy; its session cookie header value."""
    import httpx

    o2p = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        url = f"{o2p}/oauth2/start?rd=/"
        for _ in range(20):
            response = browser.get(url)
            if response.status_code in (301, 302, 303, 307, 308):
                url = urljoin(url, response.headers["location"])
                if url.startswith(f"{o2p}/") and urlsplit(url).path == "/":
                    break  # back at oauth2-proxy's start page: logged in
                continue
            path = urlsplit(str(response.url)).path
            if response.status_code == 200 and path == "/login":
                csrf = _hidden(response.text, "csrf")
                rd = _hidden(response.text, "rd")
                response = browser.post(
                    urljoin(url, "/login"), data={"csrf": csrf, "rd": rd, "email": email}
                )
                if response.status_code not in (302, 303):
                    raise RuntimeError(f"hub /login answered {response.status_code}")
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code == 200 and path.startswith("/mock/"):
                state = parse_qs(urlsplit(url).query)["state"][0]
                action = _form_action(response.text)
                url = urljoin(url, f"{action}?{httpx.QueryParams(state=state, user=user)}")
                continue
            raise RuntimeError(f"unexpected {response.status_code} at {url}: {response.text[:300]}")
        else:
            raise RuntimeError("login did not finish within 20 steps")
        cookies = {
            c.name: c.value
            for c in browser.cookies.jar
            if c.name.startswith("_oauth2_proxy") and not c.name.endswith("_csrf")
        }
    if not cookies:
        raise RuntimeError("oauth2-proxy set no session cookie")
    return "; ".join(f"{name}={value}" for name, value in sorted(cookies.items()))


def _hidden(html: str, name: str) -> str:
    import re

    found = re.search(rf'name="{name}"\s+value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"\s+name="{name}"', html
    )
    if not found:
        raise RuntimeError(f"no hidden field {name!r} in the hub's page")
    import html as html_module

    return html_module.unescape(found.group(1))


def _form_action(html: str) -> str:
    import html as html_module
    import re

    found = re.search(r'<form[^>]*action="([^"]*)"', html)
    if not found:
        raise RuntimeError("no form on the mock IdP page")
    return html_module.unescape(found.group(1))


if __name__ == "__main__":  # pragma: no cover - convenience: build/locate only
    try:
        found = binary()
    except Unavailable as exc:
        sys.exit(str(exc))
    print(found, version(found))
