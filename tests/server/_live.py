"""Helpers for server tests: keys, an app on a store, a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from tests._workflows import make

from keel.server import Settings, create_app, create_key
from keel.store import Store


def keys(store: Store) -> dict[str, str]:
    """One key per role, named after it."""
    return {role: create_key(store, role, name)[1]
            for role, name in (("submitter", "billing-system"), ("reviewer", "alice"),
                               ("admin", "ops-admin"))}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def app_for(store: Store, **kw: Any) -> FastAPI:
    settings = kw.pop("settings", None) or Settings(max_batch=50, max_body_bytes=64 * 1024)
    return create_app(kw.pop("workflow", None) or make(), store=store, settings=settings, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="keel-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
