"""Masking secrets in messages and logs (`tether.redact`)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tether.redact import redact, secret_forms

LONG = "abcd-9f8e7d6c5b4a"
SHORT = "abcd"  # e.g. KEY_PREFIX, a prefix of API_KEY


@pytest.mark.parametrize("order", [[SHORT, LONG], [LONG, SHORT]])
def test_a_secret_inside_a_longer_one_does_not_break_its_mask(order: list[str]) -> None:
    text = f"key={LONG} prefix={SHORT}"
    assert redact(text, order) == "key=*** prefix=***"


def test_url_encoded_forms_are_masked_longest_first() -> None:
    long = "p@ss/word:with-slash"
    short = "p@ss"
    text = f"url=https://h/x?pw={quote(long, safe='')} raw={long} short={short}"
    masked = redact(text, [short, long])
    assert masked == "url=https://h/x?pw=*** raw=*** short=***"
    assert "word" not in masked and "slash" not in masked


def test_secret_forms_are_longest_first_and_skip_short_values() -> None:
    forms = secret_forms(["abc", None, "", SHORT, LONG, "a b c"])
    assert forms == [LONG, "a%20b%20c", "a b c", SHORT]
    assert [len(f) for f in forms] == sorted((len(f) for f in forms), reverse=True)


def test_passwords_in_urls_are_masked() -> None:
    assert redact("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
