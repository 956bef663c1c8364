"""Who may do what: the roles of tokens, and the one check every action makes.

A token has a role and, optionally, a project scope (the projects it is granted):

- `admin`: everything: reads, secret values, changes, clusters, regions and tokens.
- `developer`: reads, secret values and changes (services, deploys, variables, application
  settings) in the projects it is granted; no clusters, no tokens.
- `viewer`: reads in the projects it is granted, without secret values; changes nothing.

A token without a project scope is granted every project (a developer without one may also
create projects); with one, the others do not exist for it (listed nowhere, 403 when named).
Clusters, regions and the catalog are readable by every valid token: they hold no secret (cluster
addresses are shown without their passwords).

The check lives in the actions, not in the routes, so the REST API, the Services view and the
Divio-compatible API all get the same answer from the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tether.errors import UserError


class Role(StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class Need(StrEnum):
    """What an action needs from the token that asks."""

    #: see a project, its environments, services (without secrets), deployments and logs
    READ = "read"
    #: see secret values (credentials, SECRET_KEY) of a project
    REVEAL = "reveal"
    #: change a project: services, deploys, variables, application settings
    CHANGE = "change"
    #: create a project
    CREATE_PROJECT = "create project"
    #: administer Tether: clusters, regions, tokens, everything
    ADMIN = "admin"


class Forbidden(UserError):
    """A valid token asked for something its role or project scope does not allow (HTTP 403)."""

    code = "forbidden"
    status = 403


ALLOWED: dict[Role, frozenset[Need]] = {
    Role.ADMIN: frozenset(Need),
    Role.DEVELOPER: frozenset({Need.READ, Need.REVEAL, Need.CHANGE, Need.CREATE_PROJECT}),
    Role.VIEWER: frozenset({Need.READ}),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token (by name), the person it belongs to, its role and scope."""

    name: str
    role: Role
    owner: str | None = None
    #: the projects it is granted; None: every project
    projects: frozenset[str] | None = None
    token_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit trail and the history name it: the owner, and the token when the
        token has a name of its own (`alice (laptop)`)."""
        if not self.owner or self.owner == self.name:
            return self.name
        return f"{self.owner} ({self.name})"

    def sees(self, project: str) -> bool:
        """Whether the project exists for this token at all."""
        return self.projects is None or project in self.projects

    def may(self, need: Need, project: str | None = None) -> bool:
        if need not in ALLOWED[self.role]:
            return False
        if need is Need.CREATE_PROJECT and self.role is not Role.ADMIN:
            return self.projects is None  # a scoped developer stays in its projects
        return project is None or self.sees(project)

    def require(self, need: Need, project: str | None = None) -> None:
        """Raise Forbidden, saying why and what would allow it, unless allowed."""
        if self.may(need, project):
            return
        who = f"token {self.name!r} ({self.role.value}"
        who += (f", projects {', '.join(sorted(self.projects))})" if self.projects is not None
                else ")")
        if project is not None and need in ALLOWED[self.role] and not self.sees(project):
            raise Forbidden(f"{who} is not granted project {project!r}: ask an admin for a "
                            "token of that project (`tether token create`)")
        what = {Need.READ: "read this", Need.REVEAL: "see secret values",
                Need.CHANGE: "change anything", Need.CREATE_PROJECT: "create projects",
                Need.ADMIN: "administer clusters and tokens"}[need]
        raise Forbidden(f"{who} may not {what}: "
                        + ("that needs an admin token" if need is Need.ADMIN else
                           "that needs a developer token without a project scope, or an admin"
                           if need is Need.CREATE_PROJECT else
                           "that needs a developer or admin token"))

    def visible(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.sees(n)]


#: Tether itself (start-up, the engine, clusters.toml): every right
SYSTEM = Principal(name="system", role=Role.ADMIN)
