"""Bodies stream both ways: a large download and a large upload pass through the proxy
chunk by chunk, and the process's memory stays far below the body size."""

from __future__ import annotations

import tracemalloc

import httpx

from tests.proxy.conftest import Env
from tests.proxy.support import session_cookie

DOWNLOAD = 1024 * 1024 * 1024  # 1 GiB
UPLOAD = 64 * 1024 * 1024


async def test_large_download_keeps_memory_bounded(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    headers = {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    received = 0
    tracemalloc.start()
    try:
        async with http.stream("GET", f"/big/{DOWNLOAD}", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(DOWNLOAD)
            async for chunk in response.aiter_raw():
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == DOWNLOAD
    # Upstream, hub and client all run in this process: the peak covers all three.
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes for a {DOWNLOAD}-byte body"


async def test_large_upload_streams_past_the_hub_body_limit(
    env: Env, http: httpx.AsyncClient
) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    headers = {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    piece = b"u" * (256 * 1024)

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(UPLOAD // len(piece)):
            yield piece

    tracemalloc.start()
    try:
        response = await http.post("/upload", headers=headers, content=body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert response.json() == {"received": UPLOAD}
    assert peak < 16 * 1024 * 1024
