"""Keep secrets out of messages: errors raised by drivers or printed by apps may echo them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@\s]+)@")


def secret_forms(secrets: Iterable[str | None]) -> list[str]:
    """Every form of the secrets that `redact` masks (raw and URL-encoded; secrets shorter than
    4 characters are not masked), longest first."""
    forms = set()
    for secret in secrets:
        if secret and len(secret) >= 4:
            forms.update((secret, quote(secret, safe="")))
    return sorted(forms, key=lambda form: (-len(form), form))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask every known secret (raw and URL-encoded) and any password inside a URL. Longest
    first: a secret that is part of a longer one (KEY_PREFIX=abcd, API_KEY=abcd…) must not break
    the longer one's match, which would leave the rest of it in clear."""
    for form in secret_forms(secrets):
        text = text.replace(form, "***")
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def mask_value(value: str) -> str:
    """A secret value as shown when its owner did not ask to see it: a URL keeps its scheme,
    user, host and path with the password masked (what it points at stays visible); anything
    else is masked whole."""
    masked = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", value)
    return masked if masked != value else "***"
