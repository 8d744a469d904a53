"""The JSON API under /v1 (and the health endpoints)."""

from keel.server.api import admin, decisions, health, records, releases, review

ROUTERS = (health.router, decisions.router, records.router, review.router, admin.router,
           releases.router)

__all__ = ["ROUTERS"]
