"""The plumbing providers share (issue 9): admin URLs taken apart without ever quoting them, name
checks, one-line redacted reasons."""

from __future__ import annotations

import pytest

from tether.errors import ClusterError
from tether.providers.base import ResourceNames
from tether.providers.common import check_names, first_line, http_admin_url

SECRET = "s3cr%3At-pw"  # URL-encoded "s3cr:t-pw"


def test_an_admin_url_is_taken_apart() -> None:
    url = http_admin_url(f"http://adm%40in:{SECRET}@[::1]/api/", what="X API", hint="h",
                         http_port=15672)
    assert (url.scheme, url.host, url.port, url.user, url.password, url.path) == (
        "http", "::1", 15672, "adm@in", "s3cr:t-pw", "/api")
    assert url.where == "[::1]:15672" and url.base == "http://[::1]:15672"
    assert http_admin_url("https://a:b@h.example", what="X", hint="h", http_port=9200).port == 443


@pytest.mark.parametrize(("url", "words"), [
    (f"ftp://a:{SECRET}@h:1/", "is not a X API URL"),
    (f"http://a:{SECRET}@h:99999999/", "is not a valid X API URL"),
    (f"http://:{SECRET}@h:1/", "has no user"),
    (f"http://a:{SECRET}@h:1/some/path", "must not have a path"),
    (f"http://a:{SECRET}@h:1/?q=1", "must not have a path"),
])
def test_a_bad_admin_url_says_what_to_fix_without_its_password(url: str, words: str) -> None:
    with pytest.raises(ClusterError) as err:
        http_admin_url(url, what="X API", hint="use http://USER:PW@HOST:PORT", http_port=1,
                       allow_path=False)
    assert words in err.value.message and "use http://USER:PW@HOST:PORT" in err.value.message
    assert SECRET not in err.value.message and "s3cr:t" not in err.value.message


def test_names_are_plain_identifiers_of_bounded_length() -> None:
    check_names(ResourceNames("tether_i12", rotation=3))
    with pytest.raises(ClusterError, match="plain identifier of at most 32"):
        check_names(ResourceNames("t" * 33), max_length=32)
    for bad in ("Tether", "a-b", "a b", "1abc", 'x";drop'):
        with pytest.raises(ClusterError, match="plain identifier"):
            check_names(ResourceNames(bad))


def test_first_line_is_short_and_secret_free() -> None:
    text = "boom: password pw-123 refused\nsecond line pw-123"
    assert first_line(text, ["pw-123"]) == "boom: password *** refused"
    assert len(first_line("x" * 1000, [])) == 300
    assert first_line("  ", [], fallback="KeyError") == "KeyError"
