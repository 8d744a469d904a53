"""route: accepted, review task, or fallback, from confidence, flags and the audit sample."""

from __future__ import annotations

import hashlib

from keel._record import Item, ReviewRequest
from keel.workflow import Policy


def audit_draw(key: str) -> float:
    """A stable number in [0, 1) per key, so replays pick the same audit sample."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class ConfidenceRouter:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._vs: dict[tuple[float, str], str] = {}  # " vs threshold ..." per threshold, policy

    def _versus(self, threshold: float) -> str:
        key = (threshold, self.policy.version)
        text = self._vs.get(key)
        if text is None:
            if len(self._vs) > 1_000:
                self._vs.clear()
            text = self._vs[key] = f" vs threshold {threshold:.3f} (policy {self.policy.version})"
        return text

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            if item.disposition is None:
                self._route(item)
        return items

    def _send(self, item: Item, reason: str, detail: str) -> None:
        item.review = ReviewRequest(reason, detail)
        item.finish("in_review", reason)

    def _route(self, item: Item) -> None:
        pred = item.prediction
        if item.output is None or pred is None:
            return  # predict already decided failed / review
        ood = item.flags.get("out_of_distribution")
        threshold = self.policy.threshold_for(item.output)
        conf = pred.confidence
        why = f"confidence {conf:.3f}{self._versus(threshold)}"
        if item.step_results:  # a multi-step workflow: the policy judges the last step
            why = f"step {item.step_results[-1]['step']}: {why}"
        if self.policy.review_all == "guarantee_void":
            self._send(item, "guarantee_void", f"the guarantee of policy {self.policy.version} "
                       f"is void: a person decides every record ({why})")
        elif self.policy.review_all:
            self._send(item, self.policy.review_all,
                       f"{self.policy.review_all} stage: a person decides every record ({why})")
        elif ood:
            self._send(item, "out_of_distribution", f"out-of-distribution score {ood}")
        elif conf < threshold:
            self._send(item, "low_confidence", why)
        else:
            item.finish("fallback" if item.from_fallback else "accepted", why)
            if self.policy.audit_rate and audit_draw(item.key) < self.policy.audit_rate:
                item.audit = True
        detail = {"disposition": item.disposition, "why": item.review.detail if item.review else why,
                  "confidence": conf, "threshold": threshold}
        if item.review:
            detail["review_reason"] = item.review.reason
        if item.audit:
            detail["audit_sample"] = True
        item.log("routed", detail=detail, model_version=item.predicted_by)
