"""keel serve, keel keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keel.cli._common import DbOption, JsonOption, console, console_err, fmt_time, print_json

keys_app = typer.Typer(help="API keys for `keel serve`: create, list, revoke.",
                       no_args_is_help=True)


def serve_cmd(
    workflow_py: Annotated[Path, typer.Argument(help="Path to the workflow.py to serve.")],
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8000,
    db: DbOption = None,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1,
                                           help="Most records in one request.")] = 1000,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.01,
                                               help="Largest request body, in MiB.")] = 4.0,
    secure_cookies: Annotated[bool, typer.Option(
        "--secure-cookies", help="Send the login cookie over HTTPS only (behind TLS).")] = False,
    enqueue: Annotated[bool, typer.Option(
        "--enqueue", help="Queue records for `keel worker` processes and answer 202, instead "
                          "of deciding them in this process.")] = False,
) -> None:
    """Serve the decision API, the review inbox and the dashboard over HTTP."""
    from keel.server import Settings, serve  # start-up: see keel.cli

    settings = Settings(max_batch=max_batch, max_body_bytes=int(max_body_mb * 1024 * 1024),
                        secure_cookies=secure_cookies, enqueue=enqueue)
    console.print(f"keel serve: http://{host}:{port}/ui/review (sign in with a reviewer key: "
                  "`keel keys create --role reviewer`), API docs at /docs")
    serve(workflow_py, host=host, port=port, db=db, settings=settings)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="submitter | reviewer | approver | admin")],
    name: Annotated[str | None, typer.Option("--name", help="Who or what holds it.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key. It is printed once; keel keeps only its hash."""
    from keel.server import create_key  # start-up: see keel.cli
    from keel.store import Store  # start-up: see keel.cli

    store = Store.open(db)
    try:
        record, secret = create_key(store, role, name)
    finally:
        store.close()
    if as_json:
        print_json({**record, "key": secret})
        return
    console_err.print(f"created {record['role']} key [bold]{record['id']}[/] ({record['name']}); "
                      "copy it now, it is not shown again:")
    print(secret)  # alone on stdout, so KEY=$(keel keys create ...) captures just the key


@keys_app.command("list")
def keys_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Keys with their role, name and last use (never the keys themselves)."""
    from keel.server import list_keys  # start-up: see keel.cli
    from keel.store import Store  # start-up: see keel.cli

    store = Store.open(db)
    try:
        rows = list_keys(store)
    finally:
        store.close()
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "role", "created", "last used", "revoked")
    for r in rows:
        table.add_row(r["id"], r["name"] or "", r["role"], fmt_time(r["created_at"]),
                      fmt_time(r["last_used_at"]), fmt_time(r["revoked_at"]))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")],
                db: DbOption = None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from keel.server import revoke_key  # start-up: see keel.cli
    from keel.store import Store  # start-up: see keel.cli

    store = Store.open(db)
    try:
        revoke_key(store, key_id)
    finally:
        store.close()
    console.print(f"revoked key {key_id}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.add_typer(keys_app, name="keys")
