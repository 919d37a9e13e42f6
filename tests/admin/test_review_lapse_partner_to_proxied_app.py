"""Flow: partner users sign in through their (mock) IdP and use an app through
forward-auth → the lifecycle opens the partner's access review and mails its sponsor (a
real SMTP server) → the sponsor confirms one person in the console → the window ends →
the unconfirmed person is refused with ``access_lapsed`` and told why, the confirmed one
still gets in → the sponsor restores them → the audit trail tells the whole story.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from federation.admin import lifecycle
from federation.audit import AuditQuery
from federation.hub import Hub
from federation.web.app import create_app
from tests.admin.support import BASE, api_settings, forward_auth, make_hub, sign_in_as
from tests.browser.test_console import hidden_fields
from tests.fakes.clock import FakeClock
from tests.peers.smtp import SmtpSink

EVERY, WINDOW = 30, 7


@pytest.fixture
def hub(events: list[dict[str, Any]], smtp_sink: SmtpSink) -> Hub:
    settings = api_settings()
    data = settings.model_dump(mode="json", exclude_none=True)
    corp, acme, _ = data["partners"]
    corp["connections"][0]["users"].append(
        {"subject": "sam", "email": "sam@corp.example", "name": "Sam"}
    )
    acme["sponsors"] = ["sam@corp.example"]
    acme["review"] = {"every_days": EVERY, "window_days": WINDOW}
    data["smtp"] = {"host": smtp_sink.host, "port": smtp_sink.port}
    made = make_hub(type(settings).model_validate(data), events)
    # Real time at the start: the audit trail and the registry history carry real stamps;
    # the lifecycle gets its `now` from the test.
    made.clock = FakeClock(time.time())
    return made


@pytest.fixture
def app(hub: Hub) -> Starlette:
    return create_app(hub=hub)


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def test_unconfirmed_access_lapses_at_the_end_of_the_review_window(
    hub: Hub, app: Starlette, smtp_sink: SmtpSink
) -> None:
    async with client(app) as alice, client(app) as bob, client(app) as sam:
        await sign_in_as(alice, "alice@acme.example")
        await sign_in_as(bob, "bob@acme.example")
        cookies = {p: c.cookies["isthmus_session"] for p, c in (("alice", alice), ("bob", bob))}
        for cookie in (cookies["alice"], cookies["bob"], cookies["bob"]):
            assert (await forward_auth(app, cookie)).status_code == 200

        # The review falls due every_days after the partner was registered.
        history = await hub.documents.history(kind="partner", doc_id="acme")
        due = datetime.fromtimestamp(min(c.at for c in history), UTC) + timedelta(days=EVERY)
        review_id = f"r-acme-{due:%Y%m%d}"
        assert f"reviews: opened {review_id} (2 lines)" in await lifecycle.tick(hub, due)

        [mail] = smtp_sink.to("sam@corp.example")
        assert mail["Subject"] == "Access review: Acme Inc"
        link = re.search(r"http://\S+/admin/reviews/(\S+)", str(mail.get_content()))
        assert link and link.group(1) == review_id

        # The sponsor follows the link, and confirms alice only.
        await sign_in_as(sam, "sam@corp.example")
        page = await sam.get(f"/admin/reviews/{review_id}")
        assert page.status_code == 200
        who = re.findall(r'<tr id="line-(\d+)">.*?<td>([^<]*@acme\.example)</td>', page.text, re.S)
        assert [email for _, email in who] == ["alice@acme.example", "bob@acme.example"]
        alice_line = next(index for index, email in who if email.startswith("alice"))
        form = {**hidden_fields(page.text, "confirm-form"), "line": alice_line, "what": "selected"}
        confirmed = await sam.post(f"/admin/reviews/{review_id}/confirm", data=form)
        assert confirmed.status_code == 303

        # Before the window ends nothing changes; at its end bob's access lapses.
        assert not any("closed" in line for line in await lifecycle.tick(hub, due))
        assert (await forward_auth(app, cookies["bob"])).status_code == 200
        done = await lifecycle.tick(hub, due + timedelta(days=WINDOW))
        assert f"reviews: closed {review_id} (1 confirmed, 1 lapsed)" in done

        refused = await forward_auth(app, cookies["bob"])
        assert refused.status_code == 403
        assert "nobody confirmed it in the access review of" in refused.text
        assert "ask your sponsor" in refused.text
        assert (await forward_auth(app, cookies["alice"])).status_code == 200

        closed = await sam.get(f"/admin/reviews/{review_id}")
        assert "This review is closed." in closed.text
        assert "Restore bob@acme.example for orders" in closed.text

        # The sponsor restores bob: the policy decides again.
        restore = re.search(r'<li id="lapsed-\d+">(.*?)</li>', closed.text, re.S)
        assert restore
        restored = await sam.post(
            f"/admin/reviews/{review_id}/restore", data=hidden_fields(restore.group(1)),
            follow_redirects=True,
        )  # fmt: skip
        assert "Access restored: orders." in restored.text
        assert "Restore bob@acme.example" not in restored.text
        assert (await forward_auth(app, cookies["bob"])).status_code == 200

    # The audit trail (the searchable log an auditor reads) tells the story.
    await hub.audit.flush()
    trail = await hub.audit_log.query(AuditQuery(partner="acme", limit=1000))
    story = [(e["event"], e.get("email") or e.get("to")) for e in reversed(trail)
             if e["event"].startswith(("review.", "access."))]  # fmt: skip
    assert story == [
        ("review.opened", None),
        ("review.mailed", "sam@corp.example"),
        ("review.confirmed", "alice@acme.example"),
        ("access.lapsed", "bob@acme.example"),
        ("review.closed", None),
        ("access.restored", "bob@acme.example"),
    ]
    confirmed_by = next(e for e in trail if e["event"] == "review.confirmed")["actor"]
    assert confirmed_by == "sam@corp.example (corp)"
    [denied] = await hub.audit_log.query(
        AuditQuery(partner="acme", user="bob@acme.example", event="proxy.decision",
                   outcome="failure")
    )  # fmt: skip
    assert denied["reasons"][0].startswith("access_lapsed: ")
