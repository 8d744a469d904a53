"""``keel serve``: the decision API, the reviewer web app and the live dashboard.

::

    from keel.server import create_app, serve
    app = create_app("workflow.py", db="sqlite:///keel.db")   # an ASGI app (FastAPI)
    serve("workflow.py", host="127.0.0.1", port=8000)          # run it under uvicorn
"""

from __future__ import annotations

from pathlib import Path

from keel.server._app import create_app
from keel.server._keys import ROLES, Principal, create_key, list_keys, revoke_key
from keel.server._support import PeriodicJob, Settings
from keel.workflow import Workflow

__all__ = ["ROLES", "PeriodicJob", "Principal", "Settings", "create_app", "create_key",
           "list_keys", "revoke_key", "serve"]


def serve(workflow: Workflow | str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          db: str | None = None, settings: Settings | None = None,
          log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn, one process: the store's writer)."""
    import uvicorn

    app = create_app(workflow, db=db, settings=settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            access_log=False, proxy_headers=False, server_header=False)
    uvicorn.Server(config).run()
