"""The front door: one listener that reaches every environment by its host name.

An environment `test` of project `shop` is `test.shop.DOMAIN`: with the default domain
`localhost` that is `http://test.shop.localhost:PORT/`, which browsers and curl resolve to this
machine by themselves; for a real fleet, point a wildcard DNS name (`*.apps.example.com`) at the
machine and set the domain to it. One socket serves every environment, so their number is not
bounded by a range of ports; a port of its own per environment (`TETHER_ENV_PORTS`) stays
available beside it.

Project and environment names are DNS labels already (`tether.naming`), so the mapping both ways
is exact and needs no escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tether.errors import UserError

DEFAULT_DOMAIN = "localhost"
#: a lower-case DNS name of one or more labels, e.g. `localhost` or `apps.example.com`
DOMAIN_RE = re.compile(r"(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                       r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_LABEL = r"[a-z][a-z0-9-]*"


def check_domain(domain: str) -> str:
    """The domain environments' host names end with, lower-cased; UserError if it is no DNS name."""
    value = domain.strip().rstrip(".").lower()
    if not DOMAIN_RE.fullmatch(value):
        raise UserError(f"{domain!r} is not a domain name: give one such as localhost or "
                        "apps.example.com (a wildcard DNS name *.apps.example.com pointing here)")
    return value


@dataclass(frozen=True)
class FrontDoor:
    """Where the front door listens and how it names environments."""

    domain: str = DEFAULT_DOMAIN
    port: int = 80
    scheme: str = "http"

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", check_domain(self.domain))

    def host_for(self, project: str, environment: str) -> str:
        return f"{environment}.{project}.{self.domain}"

    def url_for(self, project: str, environment: str) -> str:
        default = {"http": 80, "https": 443}.get(self.scheme)
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host_for(project, environment)}{port}"

    def key_for_host(self, host: str) -> str | None:
        """`project/environment` named by a Host header (`test.shop.localhost:8072`), or None when
        the host is not one of the front door's."""
        name = host.strip().lower()
        if name.startswith("["):  # an IPv6 literal names no environment
            return None
        name = name.rsplit(":", 1)[0] if ":" in name else name
        name = name.rstrip(".")
        match = re.fullmatch(rf"({_LABEL})\.({_LABEL})\.{re.escape(self.domain)}", name)
        if match is None:
            return None
        environment, project = match.groups()
        return f"{project}/{environment}"


@dataclass(frozen=True)
class AppsSettings:
    """How `tether up` makes applications reachable: its own front door on `port` (default the
    API's + 2) for host names under `domain`, and optionally a Caddy in front of it, driven
    through its admin API at `caddy_admin`, listening on `caddy_port` with TLS `caddy_tls`
    (`acme`, `internal` or `off`)."""

    port: int | None = None
    domain: str = DEFAULT_DOMAIN
    caddy_admin: str | None = None
    caddy_port: int | None = None
    caddy_tls: str = "acme"

    def caddy_door(self) -> FrontDoor:
        """The public side when Caddy is in front: https on 443 unless told otherwise."""
        scheme = "http" if self.caddy_tls == "off" else "https"
        return FrontDoor(self.domain, self.caddy_port or (80 if scheme == "http" else 443),
                         scheme)
