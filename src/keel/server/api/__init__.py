"""The JSON API under /v1 (and the health endpoints)."""

from keel.server.api import admin, decisions, health, records, review

ROUTERS = (health.router, decisions.router, records.router, review.router, admin.router)

__all__ = ["ROUTERS"]
