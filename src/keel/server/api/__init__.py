"""The JSON API under /v1 (and the health endpoints)."""

from keel.server.api import admin, cost, decisions, gates, health, records, releases, review

ROUTERS = (health.router, decisions.router, records.router, review.router, admin.router,
           releases.router, gates.router, cost.router)

__all__ = ["ROUTERS"]
