"""POST /v1/decisions: one record or a batch, idempotent by key."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from keel import _json
from keel.errors import BatchTooLarge, Forbidden, InvalidBody, InvalidJson, MissingKey
from keel.server._http import Submitter
from keel.server.api._models import ERRORS, BatchAnswer, DecisionAnswer
from keel.workflow import Workflow

router = APIRouter(prefix="/v1", tags=["decisions"])

MAX_KEY_CHARS = 500

BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/WorkflowInput"},
            {"$ref": "#/components/schemas/DecisionBatch"},
        ]}}},
    },
}


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def parse_records(body: bytes, wf: Workflow, max_batch: int) -> tuple[list[dict[str, Any]], bool]:
    """The records of a request body and whether it was a single record. A request whose
    records break the workflow's input contract (its schema or its checks) is refused whole,
    with every violation listed: the API answers only what its schema admits."""
    key_field = wf.key
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from exc
    single = not (isinstance(payload, dict) and set(payload) == {"records"})
    records = [payload] if single else payload["records"]
    if not isinstance(records, list) or not records:
        raise InvalidBody("'records' must be a non-empty list of records")
    if len(records) > max_batch:
        raise BatchTooLarge(f"{len(records):,} records in one request; the limit is "
                            f"{max_batch:,}: split the batch")
    problems: list[dict[str, Any]] = []
    for n, rec in enumerate(records):
        _check_record(rec, n, key_field, single)
        _value, violations = wf.input_contract.validate(rec, strict=True)
        problems += [{"record": n, "key": str(rec.get(key_field)), **v.as_dict()}
                     for v in violations]
        if wf.input.model_config.get("extra") != "allow":
            problems += [{"record": n, "key": str(rec.get(key_field)), "field": str(name),
                          "rule": "unknown_field",
                          "message": f"{name!r} is not a field of {wf.input.__name__}; the "
                                     f"fields are {sorted(wf.input.model_fields)}"}
                         for name in rec if name not in wf.input.model_fields]
    if problems:
        first = problems[0]
        where = "the record" if single else f"records[{first['record']}]"
        raise InvalidBody(f"{where} breaks the input contract: {first['field']}: "
                          f"{first['message']} ({len(problems)} problem(s) in all; nothing "
                          "was decided)", problems=problems)
    return records, single


def _check_record(rec: Any, n: int, key_field: str, single: bool) -> None:
    where = "the record" if single else f"records[{n}]"
    if not isinstance(rec, dict):
        raise InvalidBody(f"{where} must be a JSON object with the workflow's input fields")
    key = rec.get(key_field)
    if key is None or isinstance(key, (dict, list, bool)) or str(key).strip() == "":
        raise MissingKey(f"{where} has no {key_field!r}: every record needs its key field, "
                         "which makes a repeat of the same request safe")
    if len(str(key).strip()) > MAX_KEY_CHARS:
        raise MissingKey(f"{where}: {key_field!r} is longer than {MAX_KEY_CHARS} characters")
    if has_nul(rec):
        raise InvalidBody(f"{where} contains a NUL character (\\u0000), which keel cannot "
                           "store; remove it and send again")


@router.post(
    "/decisions", summary="Decide one record or a batch",
    description=(
        "Send one record (the workflow's input fields) or `{\"records\": [...]}`. A request "
        "whose records break the input contract is refused whole (422, each violation in "
        "`error.problems`; nothing is decided). A key "
        "decided before is not decided again: its stored decision comes back with "
        "`already_decided: true`. One record answers 200 with the disposition, or 202 with "
        "the review task when a person must decide; a batch answers 200 with one result per "
        "record. A server started with `keel serve --enqueue` queues the records for "
        "`keel worker` processes instead and answers 202 with `queued: true` and each "
        "record's `url`."),
    responses={200: {"model": DecisionAnswer | BatchAnswer},
               202: {"model": DecisionAnswer, "description": "Waiting for a person"}, **ERRORS},
    openapi_extra=BODY_DOC,
)
async def post_decisions(request: Request, who: Submitter) -> Response:
    status, body = await decide_body(request.app.state, await request.body(), who)
    return Response(body, status_code=status, media_type="application/json")


async def decide_body(state: Any, raw: bytes, who: Any = None) -> tuple[int, bytes]:
    """The one way a decision request is answered, whichever door it came in by (this route
    for browser sessions and the docs, the ASGI lane in ``_fastlane.py`` for API keys)."""
    if who is not None and not state.runner.may_submit(who.name):
        raise Forbidden(f"{state.workflow.name} is an MVP and takes records only from the API "
                        f"keys its gates name; {who.name} is not one of them")
    records, single = parse_records(raw, state.workflow, state.settings.max_batch)
    if state.settings.enqueue:  # workers decide: answer 202 with where to look
        from keel.runtime import enqueue  # start-up: only a server that queues

        queued = await asyncio.to_thread(enqueue, state.runner, records)
        if single:
            return (202 if queued[0]["queued"] else 200), _json.dumpb(queued[0])
        counts = Counter(a["disposition"] or "queued" for a in queued)
        return 202, _json.dumpb({"results": queued, "counts": dict(counts)})
    answers = await state.batcher.submit(records)
    if single:
        answer = answers[0]
        return (202 if answer["disposition"] == "in_review" else 200), _json.dumpb(answer)
    counts = Counter(a["disposition"] for a in answers)
    return 200, _json.dumpb({"results": answers, "counts": dict(counts)})
