"""Redaction finds personal data (checksums included) and leaves keel's own strings alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.redact import MASK, Redactor, find_pii, iban_ok, luhn_ok
from keel.stages import StorageRedactor

R = Redactor()


def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.sampled_from(["", " ", "-"]))
def test_every_luhn_valid_card_number_is_masked(body: str, sep: str) -> None:
    number = _luhn_complete(body)
    shown = sep.join(number[i:i + 4] for i in range(0, len(number), 4))
    out = R.text(f"paid with {shown} yesterday")
    assert number not in out.replace(sep, "") if sep else number not in out
    assert "[CARD]" in out or "[PHONE]" in out


def test_card_numbers_failing_luhn_are_not_called_cards() -> None:
    assert [f.kind for f in find_pii("ref 4111 1111 1111 1112")] == []
    assert [f.kind for f in find_pii("card 4111 1111 1111 1111")] == ["CARD"]


@pytest.mark.parametrize("iban", ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000",
                                  "FR1420041010050500013M02606", "nl91abna0417164300"])
def test_valid_ibans_are_masked(iban: str) -> None:
    assert iban_ok(iban)
    assert R.text(f"send it to {iban} please") == "send it to [IBAN] please"


def test_ibans_with_a_wrong_check_digit_are_left_alone() -> None:
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert "IBAN" not in R.text("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize("text", ["+44 20 7946 0958", "(555) 123-4567", "555.123.4567",
                                  "+1-555-123-4567", "07700 900123", "07700900123",
                                  "0033 6 12 34 56 78"])
def test_phone_numbers_are_masked(text: str) -> None:
    assert R.text(f"call {text} now") == "call [PHONE] now"


@pytest.mark.parametrize("text", [
    "confidence 0.300 vs threshold 0.800 (policy default)", "b77-00001", "order 2024-01-15",
    "2024-01-15 10:30:00", "amount 1234567.89", "latency 12.345 ms", "fake-1f3a9c0e77",
    "3f2a99812391827364512345abcdef", "keel.model.unavailable", "rows 1,234,567",
    # an invoice's line items as OCR reads them: quantity, unit price, amount
    "2 10.00 20.00", "Desk lamp 3 129.99 389.97", "Subtotal 1 250.00 1 250.00"])
def test_keel_s_own_strings_are_not_mistaken_for_personal_data(text: str) -> None:
    assert R.text(text) == text


def test_emails_are_masked_and_hash_mode_keeps_equal_values_equal() -> None:
    assert R.text("from ann.lee+bank@mail.example.co.uk:") == "from [EMAIL]:"
    hashed = Redactor(mode="hash", key=b"k").text("a@b.io, a@b.io, c@d.io")
    first, second, third = hashed.split(", ")
    assert first == second != third and first.startswith("[EMAIL:")
    assert Redactor(mode="hash", key=b"other").text("a@b.io") != first


def test_declared_fields_are_masked_and_found_inside_messages() -> None:
    r = Redactor(["name", "dob"])
    raw = {"id": "k1", "name": "Ann Lee", "dob": "1990-02-03", "text": "I am Ann Lee"}
    known = r.known_values(raw)
    out = r.value({"input": raw, "why": "name Ann Lee looks odd",
                   "violations": [{"field": "dob", "rule": "date", "message": "bad (got '1990-02-03')"}]},
                  known)
    assert out["input"] == {"id": "k1", "name": MASK, "dob": MASK, "text": f"I am {MASK}"}
    assert out["why"] == f"name {MASK} looks odd"
    assert out["violations"][0]["message"] == "bad (got [REDACTED])"


def test_structural_keys_are_never_rewritten() -> None:
    row = {"hash": "4111111111111111", "record_id": "4111111111111111", "note": "4111111111111111"}
    assert R.value(row) == {**row, "note": "[CARD]"}


def test_storage_policy_raw_needs_no_stage() -> None:
    assert StorageRedactor.for_policy("raw", ["name"]) is None
    with pytest.raises(ValueError, match="storage must be one of"):
        StorageRedactor.for_policy("encrypted", [])


@settings(max_examples=500)
@given(st.text(alphabet="ab12345 .()-@xyzIBAN0987", max_size=40))
def test_the_quick_pre_check_agrees_with_the_full_pattern(s: str) -> None:
    from keel.redact import _CANDIDATE, may_hold_pii

    if len(s) >= 15:  # shorter strings stop early: no IBAN fits in them
        assert may_hold_pii(s) == (_CANDIDATE.search(s) is not None)
    if may_hold_pii(s):
        assert _CANDIDATE.search(s) is not None


PII_SAMPLES = ("annabel.lee@example.org", "+44 20 7946 0958", "4111 1111 1111 1111",
               "GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432", "020 7946 0958",
               "4111111111111111", "a@b.io")


@settings(max_examples=500)
@given(st.text(alphabet="ab12345 .()-@xyzIBAN0987", max_size=20),
       st.sampled_from(PII_SAMPLES),
       st.text(alphabet="ab12345 .()-@xyzIBAN0987", max_size=20))
def test_the_quick_pre_check_never_lets_personal_data_through(before: str, pii: str,
                                                               after: str) -> None:
    from keel.redact import find_pii, may_hold_pii

    for s in (pii, f"{before} {pii} {after}", before + pii + after, before, after):
        if find_pii(s):
            assert may_hold_pii(s), s
