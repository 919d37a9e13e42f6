"""OpenID Connect Back-Channel Logout 1.0 — the hub tells clients that a session ended.

When a hub session ends — the user signs out (``/logout``, RP-initiated logout), the
partner's IdP signs them out (SAML single logout), or the partner is suspended
(``end_partner``) — every client that registered a ``backchannel_logout_uri`` *and*
received tokens in that session gets a logout token (§2.4) by POST,
``application/x-www-form-urlencoded`` ``logout_token=…`` (§2.5).

Which clients hold tokens for which session is one store set per ``sid``
(``oidc:sid-clients:{sid}``), written with the token response (one ``write_many``) and
living as long as the session; ending the session reads and deletes it.

The sending never sits on the request's path: :meth:`BackchannelSender.sessions_ended` is
the session manager's synchronous end hook; it starts an asyncio task and returns. Each
delivery has a bounded timeout; every outcome is audited (``oidc.backchannel_logout``
with the client and ``success``/``failure``) and failures are logged — a receiver that is
down never blocks or fails a logout.

A delivery that failed for a reason that may pass (no answer, a connection error, a 5xx
or 429) is retried: the hub keeps it in the shared store (``oidc:bcl-retry:…``, indexed
in one set) and :meth:`BackchannelSender.retry_due` — run every few seconds by the hub —
sends a fresh logout token (new ``jti``, ``iat``, ``exp``) after 10 s, 1 min, 5 min,
30 min and 2 h, then gives up (audited ``gave_up``). One replica sends each retry (it
claims the attempt with ``add_once``). A receiver's 4xx (it read the token and refused
it) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from federation.audit import Audit
from federation.identity import FederatedIdentity
from federation.jose import sign
from federation.keys import KeyManager
from federation.registry import Registry
from federation.sessions import EndedSession
from federation.settings import ClientSettings
from federation.stores.base import SetAdd, Store

EVENT = "http://schemas.openid.net/event/backchannel-logout"
TOKEN_TYPE = "logout+jwt"
TOKEN_TTL = 120  # seconds; receivers check exp, a logout token is used at once
DEFAULT_TIMEOUT = 5.0  # seconds per delivery, connect included
MAX_IN_FLIGHT = 20  # deliveries at once (a partner suspension may end many sessions)
# Seconds before retry 1, 2, ... of a failed delivery; then it is given up.
RETRY_DELAYS = (10.0, 60.0, 300.0, 1800.0, 7200.0)
RETRY_POLL_SECONDS = 5.0
_RETRIES = "oidc:bcl-retries"
_RETRY_TTL = sum(RETRY_DELAYS) + 3600.0  # a record outlives its last attempt

_log = logging.getLogger("isthmus.oidc.backchannel")


def _sid_clients(sid: str) -> str:
    return f"oidc:sid-clients:{sid}"


def _retry_key(client_id: str, sid: str) -> str:
    return f"oidc:bcl-retry:{client_id}:{sid}"


def _retryable(status: int | None) -> bool:
    """No answer, or an answer saying "later" (5xx, 429); a 4xx is the receiver's verdict."""
    return status is None or status >= 500 or status == 429


def record_client(client: ClientSettings, sid: str, ttl: float) -> list[SetAdd]:
    """The write that files ``client`` under the session ``sid`` (none without a URI)."""
    if client.backchannel_logout_uri is None or ttl <= 0:
        return []
    return [(_sid_clients(sid), client.client_id, ttl)]


def logout_token_claims(
    issuer: str, client_id: str, session: EndedSession, now: int
) -> dict[str, Any]:
    """The claims of a logout token (§2.4): no ``nonce``, ever."""
    return {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + TOKEN_TTL,
        "jti": secrets.token_urlsafe(16),
        "sub": session.identity.hub_subject,
        "sid": session.sid,
        "events": {EVENT: {}},
    }


class BackchannelSender:
    """Builds, signs and POSTs logout tokens; one pooled HTTP client, closed with the hub."""

    def __init__(
        self,
        issuer: str,
        registry: Registry,
        store: Store,
        keys: KeyManager,
        audit: Audit,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer
        self.registry = registry
        self.store = store
        self.keys = keys
        self.audit = audit
        self.clock = clock
        self.timeout = timeout
        # Tests mount receivers in-process here (before the first delivery).
        self.transport = transport
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[list[dict[str, Any]]]] = set()

    # --- the session manager's end hook -------------------------------------------------

    def sessions_ended(self, ended: Sequence[EndedSession]) -> None:
        """Start telling the clients of these sessions, in the background; return at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _log.warning("no event loop: back-channel logout of %d session(s) skipped", len(ended))
            return
        task = loop.create_task(self.notify(tuple(ended)), name="backchannel-logout")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the deliveries under way (each is bounded by ``timeout``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Let deliveries under way finish (bounded), then close the HTTP pool."""
        if self._tasks:
            pending = list(self._tasks)
            _, late = await asyncio.wait(pending, timeout=self.timeout + 1)
            for task in late:
                task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- delivery -----------------------------------------------------------------------

    async def notify(self, ended: Sequence[EndedSession]) -> list[dict[str, Any]]:
        """Send the logout tokens for these ended sessions; return the audit records."""
        jobs: list[tuple[ClientSettings, EndedSession]] = []
        for session in ended:
            try:
                client_ids = await self.store.set_members(_sid_clients(session.sid))
                await self.store.delete(_sid_clients(session.sid))
            except Exception as exc:  # the store is down: nobody to tell, say so
                _log.warning("back-channel logout of sid %s: store error %s", session.sid, exc)
                continue
            for client_id in sorted(client_ids):
                client = self.registry.client(client_id)
                if client is not None and client.backchannel_logout_uri is not None:
                    jobs.append((client, session))
        return await self._deliver_all([(client, session, 0) for client, session in jobs])

    async def _deliver_all(
        self, jobs: Sequence[tuple[ClientSettings, EndedSession, int]]
    ) -> list[dict[str, Any]]:
        """Deliver (client, session, attempt) jobs, at most MAX_IN_FLIGHT at once."""
        if not jobs:
            return []
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def one(client: ClientSettings, session: EndedSession, attempt: int) -> Any:
            async with gate:
                return await self.deliver(client, session, attempt)

        return list(await asyncio.gather(*(one(*job) for job in jobs)))

    def logout_token(self, client_id: str, session: EndedSession) -> str:
        key = self.keys.keys.current
        claims = logout_token_claims(self.issuer, client_id, session, int(self.clock()))
        return sign(claims, key.private_key, key.alg, key.kid, typ=TOKEN_TYPE)

    async def deliver(
        self, client: ClientSettings, session: EndedSession, attempt: int = 0
    ) -> dict[str, Any]:
        """POST one logout token (§2.5); never raises — the outcome is audited, and a
        failure that may pass is queued for a retry (``attempt``: retries so far)."""
        assert client.backchannel_logout_uri is not None
        status: int | None = None
        reason: str | None = None
        try:
            token = self.logout_token(client.client_id, session)
            async with asyncio.timeout(self.timeout):
                response = await self._client().post(
                    client.backchannel_logout_uri,
                    data={"logout_token": token},
                    headers={"Cache-Control": "no-store"},
                )
            status = response.status_code
            if status not in (200, 204):  # §2.8: 200 (or 204) is success, else an error
                reason = f"receiver answered {status}"
        except TimeoutError:
            reason = f"no answer within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a delivery must never break anything else
            reason = f"{type(exc).__name__}: {exc}"
        retry_in: float | None = None
        if reason is not None:
            _log.warning(
                "back-channel logout to client %s (sid %s) failed: %s",
                client.client_id,
                session.sid,
                reason,
            )
            if _retryable(status) and attempt < len(RETRY_DELAYS):
                retry_in = RETRY_DELAYS[attempt]
                await self._queue_retry(client.client_id, session, attempt + 1, retry_in)
        return self.audit.emit(
            "oidc.backchannel_logout",
            outcome="failure" if reason else "success",
            client=client.client_id,
            partner=session.identity.partner_id,
            sid=session.sid,
            status=status,
            reason=reason,
            attempt=attempt + 1,
            retry_in=retry_in,
            gave_up=True if reason is not None and retry_in is None else None,
        )

    # --- retries ------------------------------------------------------------------------

    async def _queue_retry(
        self, client_id: str, session: EndedSession, attempt: int, delay: float
    ) -> None:
        record = {
            "client": client_id,
            "sid": session.sid,
            "identity": session.identity.to_dict(),
            "attempt": attempt,
            "due": self.clock() + delay,
        }
        key = _retry_key(client_id, session.sid)
        try:
            await self.store.write_many([(key, record, _RETRY_TTL)], [(_RETRIES, key, _RETRY_TTL)])
        except Exception as exc:  # the store is down: the retry is lost, say so
            _log.warning("back-channel logout retry for %s not queued: %s", key, exc)

    async def retry_due(self) -> list[dict[str, Any]]:
        """Send the queued retries that are due (one replica each); their audit records."""
        now = self.clock()
        due: list[tuple[ClientSettings, EndedSession, int]] = []
        for key in sorted(await self.store.set_members(_RETRIES)):
            record = await self.store.get(key)
            if record is None:
                await self.store.set_remove(_RETRIES, key)
                continue
            if float(record["due"]) > now:
                continue
            attempt = int(record["attempt"])
            if not await self.store.add_once(f"{key}:attempt:{attempt}", _RETRY_TTL):
                continue  # another replica took this attempt
            await self.store.delete(key)
            await self.store.set_remove(_RETRIES, key)
            client = self.registry.client(str(record["client"]))
            if client is None or client.backchannel_logout_uri is None:
                continue  # the client is gone, or no longer asks to be told
            identity = FederatedIdentity.from_dict(record["identity"])
            due.append((client, EndedSession(str(record["sid"]), identity), attempt))
        return await self._deliver_all(due)

    async def run_retries(self, interval: float = RETRY_POLL_SECONDS) -> None:
        """The hub's loop: :meth:`retry_due` every ``interval`` seconds, forever."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.retry_due()
            except Exception as exc:  # a store outage: try again next round
                _log.warning("back-channel logout retries skipped: %s", exc)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 2.0))
            self._http = httpx.AsyncClient(
                timeout=timeout,
                follow_redirects=False,  # a logout token goes where registered, nowhere else
                limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=10),
                transport=self.transport,
                headers={"User-Agent": "isthmus-backchannel-logout"},
            )
        return self._http
