"""Keep secrets out of messages: errors raised by drivers or printed by apps may echo them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@\s]+)@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask every known secret (raw and URL-encoded) and any password inside a URL."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
