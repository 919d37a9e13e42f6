"""A tiny scripted "browser" for login flows across hosts (hub, partner IdPs, apps).

It follows redirects by hand (so a test can stop at any hop, e.g. at the RP's callback, and
inspect every response), keeps cookies like a browser does (one jar, cookies scoped by
host and path, NOT by port; ``Set-Cookie`` of every hop is stored) and finds and submits HTML
forms with the standard library's HTML parser::

    with Browser() as browser:
        page = browser.get(authorize_url, stop_at=redirect_uri)   # lands on the IdP login form
        done = browser.submit(page, {"login": "alice", "password": "alice-password"},
                              stop_at=redirect_uri)
        callback_url = browser.location(done)                     # the redirect to the RP

``stop_at`` is a URL prefix: the redirect chain stops at the first 3xx response whose
``Location`` starts with it and that response is returned (nothing is requested at
``stop_at``). Without it, redirects are followed until a non-redirect response.
``browser.history`` holds every response of the last navigation.

Extra ``httpx`` options (``mounts``, ``transport``, ``verify``, headers) pass through
``Browser(**client_kwargs)``; a hub served on a real port (uvicorn) needs nothing special.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import httpx

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


@dataclass
class Form:
    """An HTML form: absolute ``action``, upper-case ``method``, default field values."""

    action: str
    method: str
    attrs: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    field_types: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")

    def has_password(self) -> bool:
        return "password" in self.field_types.values()


class _FormParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k.lower(): (v or "") for k, v in attrs_list}
        if tag == "form":
            action = urljoin(self.base_url, attrs.get("action") or self.base_url)
            self._current = Form(action, (attrs.get("method") or "GET").upper(), attrs)
            self.forms.append(self._current)
            return
        form = self._current
        if form is None:
            return
        if tag == "option" and self._select is not None:
            if "selected" in attrs or self._select not in form.fields:
                form.fields[self._select] = attrs.get("value", "")
            return
        if not attrs.get("name"):
            return
        name = attrs["name"]
        if tag == "input":
            kind = (attrs.get("type") or "text").lower()
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                form.field_types.setdefault(name, kind)
                return
            form.fields[name] = attrs.get("value", "on" if kind in ("checkbox", "radio") else "")
            form.field_types[name] = kind
        elif tag == "textarea":
            self._textarea = name
            form.fields[name] = ""
            form.field_types[name] = "textarea"
        elif tag == "select":
            self._select = name
            form.field_types[name] = "select"

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._current is not None and self._textarea is not None:
            self._current.fields[self._textarea] += data


def parse_forms(html: str, base_url: str) -> list[Form]:
    """Every <form> of the page, with actions made absolute against ``base_url``."""
    parser = _FormParser(base_url)
    parser.feed(html)
    parser.close()
    return parser.forms


def find_form(
    page: httpx.Response | str,
    base_url: str | None = None,
    *,
    form_id: str | None = None,
    with_field: str | None = None,
) -> Form:
    """The form with ``form_id``, else the first one having ``with_field``, else the only one.

    Raises ``LookupError`` (with the page's beginning) when there is no such form.
    """
    if isinstance(page, httpx.Response):
        html, base = page.text, str(page.url)
    else:
        if base_url is None:
            raise ValueError("base_url is required with a str page")
        html, base = page, base_url
    forms = parse_forms(html, base)
    if form_id is not None:
        forms = [f for f in forms if f.id == form_id]
    if with_field is not None:
        forms = [f for f in forms if with_field in f.field_types]
    if not forms or (len(forms) > 1 and form_id is None and with_field is None):
        raise LookupError(
            f"no single matching form (form_id={form_id!r}, with_field={with_field!r}, "
            f"{len(forms)} candidates) at {base}:\n{html[:800]}"
        )
    return forms[0]


class Browser:
    """Scripted browser: manual redirects across hosts, one cookie jar, HTML forms."""

    def __init__(self, *, max_redirects: int = 20, timeout: float = 10.0, **client_kwargs: Any):
        self.client = httpx.Client(follow_redirects=False, timeout=timeout, **client_kwargs)
        self.max_redirects = max_redirects
        self.history: list[httpx.Response] = []

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    # -- navigation --------------------------------------------------------------------
    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stop_at: str | None = None,
        follow: bool = True,
    ) -> httpx.Response:
        request = self.client.build_request("GET", url, params=params, headers=headers)
        return self._navigate(request, stop_at=stop_at, follow=follow)

    def post(
        self,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stop_at: str | None = None,
        follow: bool = True,
    ) -> httpx.Response:
        request = self.client.build_request("POST", url, data=data, headers=headers)
        return self._navigate(request, stop_at=stop_at, follow=follow)

    def submit(
        self,
        page: httpx.Response,
        values: Mapping[str, str] | None = None,
        *,
        form_id: str | None = None,
        with_field: str | None = None,
        stop_at: str | None = None,
        follow: bool = True,
    ) -> httpx.Response:
        """Fill the page's form (defaults + ``values``) and submit it like a browser would."""
        form = find_form(page, form_id=form_id, with_field=with_field)
        data = {**form.fields, **(values or {})}
        if form.method == "POST":
            return self.post(form.action, data=data, stop_at=stop_at, follow=follow)
        return self.get(form.action, params=data, stop_at=stop_at, follow=follow)

    def login(
        self,
        page: httpx.Response,
        username: str,
        password: str,
        *,
        stop_at: str | None = None,
    ) -> httpx.Response:
        """Submit the page's password form; the user field is login/username/email/user."""
        form = find_form(page, with_field=None if _has_one_form(page) else "password")
        user_field = next(
            (n for n in ("login", "username", "email", "user") if n in form.field_types), None
        )
        pass_field = next((n for n, t in form.field_types.items() if t == "password"), None)
        if user_field is None or pass_field is None:
            raise LookupError(f"not a login form: {form}")
        data = {**form.fields, user_field: username, pass_field: password}
        if form.method == "POST":
            return self.post(form.action, data=data, stop_at=stop_at)
        return self.get(form.action, params=data, stop_at=stop_at)

    @staticmethod
    def location(response: httpx.Response) -> str:
        """Absolute target of a redirect response."""
        if response.status_code not in REDIRECT_CODES:
            raise AssertionError(
                f"expected a redirect, got HTTP {response.status_code} at {response.url}:\n"
                f"{response.text[:800]}"
            )
        return urljoin(str(response.url), response.headers["location"])

    def _navigate(
        self, request: httpx.Request, *, stop_at: str | None, follow: bool
    ) -> httpx.Response:
        self.history = []
        for _ in range(self.max_redirects + 1):
            response = self.client.send(request)
            response.read()
            self.history.append(response)
            if not follow or response.status_code not in REDIRECT_CODES:
                return response
            target = self.location(response)
            if stop_at is not None and target.startswith(stop_at):
                return response
            if response.status_code in (307, 308):
                request = self.client.build_request(
                    request.method, target, content=request.content, headers=_body_headers(request)
                )
            else:
                request = self.client.build_request("GET", target)
        raise AssertionError(
            f"more than {self.max_redirects} redirects: {[str(r.url) for r in self.history]}"
        )


def _has_one_form(page: httpx.Response) -> bool:
    return len(parse_forms(page.text, str(page.url))) == 1


def _body_headers(request: httpx.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
