"""RabbitMQ: one vhost and one user per instance, administered through the management HTTP API
(plugin `rabbitmq_management`).

The cluster URL is the management API with the credentials of a user tagged `administrator`:

    http://ADMIN:PASSWORD@127.0.0.1:15672/          (user and password URL-encoded)
    https://ADMIN:PASSWORD@rabbit.example.com:15671/   (a `management.path_prefix` goes in the path)

Applications get AMQP URLs, and AMQP is not served by the management API: the host and port they
use come from the cluster settings `amqp_host` (default: the API's host) and `amqp_port`
(default: 5672), e.g. `--setting amqp_host=rabbit.internal --setting amqp_port=5672`.

Least privilege: the user has no tags (no management API, no other vhost) and the permissions
`.*` `.*` `.*` on its own vhost only. RabbitMQ gives the admin that creates a vhost full rights on
it; that permission is removed again, so the cluster's admin credentials do not open every
tenant's vhost over AMQP either (administration still works through the API).

Names: the vhost and the user are both `names.base` (`tether_i42`), URL-encoded in API paths.
A vhost is Tether's when its description carries Tether's mark; a vhost of that name without it,
or a user of that name with tags, belongs to someone else: provisioning refuses to take it over,
and removal leaves it alone. (Servers before 3.8 keep no vhost descriptions: there a vhost of
that name is taken for Tether's.) Once the instance's vhost is there, a user of its name is the
instance's: tags given to it by hand are taken away again.

Drift (`observe`) and its repair (`provision` again): a missing vhost or user is made again, the
user's tags removed, its full permission on its vhost set again, permissions of the user on other
vhosts and of other users (the admin included) on its vhost removed. What cannot be repaired: a
vhost deleted by hand comes back EMPTY (its queues, exchanges and messages are lost); a vhost of
that name without Tether's mark is not taken over.

Rotation (`add_login`, `revoke_login`): new credentials are a second user `NAME_<n>` (no tags)
with the same permission on the vhost; the old user is deleted once no release uses it, and its
open connections are closed (the broker does it, and Tether closes any left). The vhost limits
count every user's connections already. After a rotation `observe` and `provision` look at the
login user (`names.login`) instead of `NAME`.

Fair shares: on a shared cluster each vhost gets the limits `max-connections` (the cluster setting
`connection_limit`, default 100) and `max-queues` (`queue_limit`, default 1000); 0 means no
limit, and a private cluster's vhost has none unless a setting asks for one. They are set again
at every provision, and `observe` reports limits changed on the server.

Timeouts: the management API must answer within `TIMEOUT` (5 s to connect, 10 s to answer), so
an address that accepts but never answers fails in seconds with a message that says so; deleting
a vhost (its queues and messages with it) may take `DELETE_TIMEOUT`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tether.errors import ClusterError, TransientError
from tether.providers.base import (
    ClusterSettings,
    ClusterSpec,
    Credentials,
    Observation,
    ProviderBase,
    ResourceNames,
    lost,
)
from tether.providers.common import (
    CONNECTION_LIMIT,
    QUEUE_LIMIT,
    check_names,
    cluster_error,
    host_in_url,
    http_admin_client,
    http_admin_url,
    http_failure,
    instance_limit,
    rewrap,
)
from tether.redact import redact

log = logging.getLogger("tether.providers.rabbitmq")

#: seconds to connect to the management API, and for it to answer one call
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: deleting a vhost with many queues takes a while
DELETE_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
#: the vhost limits and the cluster settings that set them
_LIMITS = (("max-connections", CONNECTION_LIMIT), ("max-queues", QUEUE_LIMIT))
DEFAULT_AMQP_PORT = 5672
_URL_HINT = "use http://ADMIN:PASSWORD@HOST:15672/"
_TAGS_FIX = "rabbitmqctl set_user_tags {user} administrator"
MARK = "managed by Tether"
FULL = {"configure": ".*", "write": ".*", "read": ".*"}
#: answers of a server (or a proxy in front of it) that is starting, stopping or overloaded
_UNAVAILABLE = (502, 503, 504)


def _vhost_limits(cluster: ClusterSpec) -> dict[str, int | None]:
    """The limits each vhost on this cluster gets (None: no limit)."""
    return {limit: instance_limit(cluster, setting) for limit, setting in _LIMITS}


def _limit_text(value: int | None) -> str:
    return "none" if value is None else str(value)


def _p(name: str) -> str:
    """One path segment of the API (vhost and user names may hold `/`, e.g. the vhost `/`)."""
    return quote(name, safe="")


def _description(names: ResourceNames) -> str:
    return f"{MARK}: {names.base}"


@dataclass(frozen=True)
class _Target:
    """Where a cluster URL points, and who the admin is (the password is kept apart)."""

    api: str  # e.g. http://127.0.0.1:15672/api, no credentials
    where: str  # host:port, safe to show
    host: str
    user: str
    password: str | None
    amqp_host: str
    amqp_port: int

    @classmethod
    def of(cls, cluster: ClusterSpec) -> _Target:
        admin = http_admin_url(cluster.url, what="RabbitMQ management API", hint=_URL_HINT,
                               http_port=15672)
        host, path = admin.host, admin.path
        if path.endswith("/api"):
            path = path[: -len("/api")]
        settings = cluster.settings or {}
        amqp_host = str(settings.get("amqp_host") or host)
        raw_port = settings.get("amqp_port") or DEFAULT_AMQP_PORT
        try:
            amqp_port = int(raw_port)
        except (TypeError, ValueError):
            raise ClusterError(f"the cluster setting amqp_port={raw_port!r} is not a port "
                               "number: use e.g. amqp_port=5672") from None
        return cls(api=f"{admin.base}{path}/api", where=admin.where, host=host,
                   user=admin.user, password=admin.password,
                   amqp_host=amqp_host, amqp_port=amqp_port)


class _Api:
    """The management API as the cluster's admin; every failure becomes a `ClusterError` whose
    message says what to fix and holds no secret."""

    def __init__(self, target: _Target, client: httpx.Client, secrets: tuple[str | None, ...]
                 ) -> None:
        self.target = target
        self.client = client
        self.secrets = secrets

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             ok_missing: bool = False, timeout: httpx.Timeout = TIMEOUT
             ) -> httpx.Response | None:
        """One request; None for a 404 when `ok_missing`."""
        t = self.target
        try:
            response = self.client.request(method, f"{t.api}{path}", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise http_failure(
                exc, api="the RabbitMQ management API", where=t.where,
                request=f"{method} {path}", timeout=timeout,
                endpoint="the management API (port 15672 by default, not AMQP's 5672)",
                fix="check that the server runs, that the management plugin is enabled "
                    "(rabbitmq-plugins enable rabbitmq_management) and that the host and port "
                    "in the cluster URL are right",
                secrets=self.secrets) from None
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code == 401:
            raise self._unauthorized(response)
        if response.status_code >= 400:
            raise cluster_error(f"the RabbitMQ management API at {t.where} refused {method} "
                                f"{path}: {self._reason(response)}",
                                response.status_code in _UNAVAILABLE)
        return response

    def json(self, path: str, ok_missing: bool = False) -> Any:
        response = self.call("GET", path, ok_missing=ok_missing)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClusterError(
                f"{self.target.where} did not answer {path} like a RabbitMQ management API: "
                f"check the port and path in the cluster URL ({_URL_HINT})") from None

    def _reason(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            text = str(data.get("reason") or data.get("error") or "") if isinstance(
                data, dict) else ""
        except ValueError:
            text = ""
        text = text or response.reason_phrase or "error"
        return redact(f"HTTP {response.status_code} {text}"[:300], self.secrets)

    def _unauthorized(self, response: httpx.Response) -> ClusterError:
        t = self.target
        reason = self._reason(response)
        if "not management user" in reason.lower() or "not administrator" in reason.lower():
            return ClusterError(
                f"the user {t.user!r} on RabbitMQ at {t.where} is not an administrator: Tether "
                f"creates vhosts and users, so give it the tag ({_TAGS_FIX.format(user=t.user)}) "
                "or put an administrator in the cluster URL")
        if t.password is None:
            return ClusterError(f"RabbitMQ at {t.where} asks for a password for user "
                                f"{t.user!r}: put it in the cluster URL ({_URL_HINT})")
        return ClusterError(
            f"RabbitMQ at {t.where} refused the user {t.user!r} and its password: fix the user "
            f"and password in the cluster URL (RabbitMQ's guest may log in from localhost only: "
            f"use an administrator of your own elsewhere) ({reason})")


class RabbitMQSettings(ClusterSettings):
    """Where applications reach AMQP (`amqp_host`, `amqp_port`: the management API's host and
    5672 by default) and the per-instance limits of each vhost."""

    amqp_host: str | None = None
    amqp_port: int | None = None
    connection_limit: int | None = None
    queue_limit: int | None = None


class RabbitMQProvider(ProviderBase):
    """A vhost and a user with rights on that vhost alone, per instance."""

    kind = "rabbitmq"
    title = "RabbitMQ brokers: a vhost and a user per instance"
    category = "MESSAGE_BROKER"
    backup_engine = "tether.backups.engines:RabbitEngine"
    service = "rabbitmq"
    variables = ("{P}_AMQP_BROKER_URL",)
    default_aliases = {"BROKER_URL": "{P}_AMQP_BROKER_URL"}
    settings_model = RabbitMQSettings
    limits = {CONNECTION_LIMIT: 100, QUEUE_LIMIT: 1000}

    @contextmanager
    def _api(self, cluster: ClusterSpec, *extra_secrets: str) -> Iterator[_Api]:
        target = _Target.of(cluster)
        with http_admin_client(target.user, target.password, TIMEOUT) as client:
            yield _Api(target, client, (target.password, cluster.url, *extra_secrets))

    @staticmethod
    def _tags(user: dict[str, Any]) -> list[str]:
        tags = user.get("tags") or []
        if isinstance(tags, str):  # before 3.9: "administrator,management"
            tags = tags.split(",")
        return [str(t).strip() for t in tags if str(t).strip()]

    @staticmethod
    def _own_vhost(vhost: dict[str, Any] | None, names: ResourceNames) -> bool | None:
        """None: no such vhost; else whether it carries Tether's mark for these names."""
        if vhost is None:
            return None
        if "description" not in vhost and "metadata" not in vhost:
            return True  # a server without vhost descriptions (before 3.8): cannot tell
        description = vhost.get("description") or (vhost.get("metadata") or {}).get(
            "description")
        return description == _description(names)

    def _state(self, api: _Api, names: ResourceNames
               ) -> tuple[bool | None, dict[str, Any] | None]:
        vhost = api.json(f"/vhosts/{_p(names.base)}", ok_missing=True)
        user = api.json(f"/users/{_p(names.login)}", ok_missing=True)
        return self._own_vhost(vhost, names), user

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """Log in to the management API, make sure the user is an administrator, return the
        RabbitMQ version (e.g. "3.10.8")."""
        with self._api(cluster) as api:
            overview = api.json("/overview")
            whoami = api.json("/whoami")
        t = api.target
        if not isinstance(overview, dict) or "rabbitmq_version" not in overview:
            raise ClusterError(f"{t.where} did not answer like a RabbitMQ management API: check "
                               f"the port and path in the cluster URL ({_URL_HINT})")
        tags = self._tags(whoami if isinstance(whoami, dict) else {})
        if "administrator" not in tags:
            raise ClusterError(
                f"the user {t.user!r} on RabbitMQ at {t.where} has the tags "
                f"{', '.join(tags) or 'none'}, not administrator: Tether creates vhosts and "
                f"users, so give it the tag ({_TAGS_FIX.format(user=t.user)}) or put an "
                "administrator in the cluster URL")
        return str(overview["rabbitmq_version"])

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: vhost, user with this password and no tags, full rights for it on its
        vhost and none elsewhere, none for anyone else (the admin included) there; repairs any
        drift `observe` reports that can be repaired. On a final failure, a fresh resource set
        is removed again (rule 5); the vhost of an instance that was already provisioned is
        never deleted here."""
        check_names(names)
        limits = _vhost_limits(cluster)
        with self._api(cluster, secret) as api:
            t = api.target
            if t.user in (names.base, names.login):
                raise ClusterError(f"the cluster's admin user is named {t.user!r} like this "
                                   "instance's user: put another administrator in the cluster URL")
            own_vhost, user = self._state(api, names)
            if own_vhost is False:
                raise ClusterError(
                    f"a vhost named {names.base} exists already on RabbitMQ at {t.where} and was "
                    "not made by Tether: Tether never takes over a vhost it did not create; "
                    "delete or rename that vhost, then retry")
            if user is not None and self._tags(user) and not own_vhost:
                raise ClusterError(
                    f"a user named {names.login} exists already on RabbitMQ at {t.where} with "
                    "the tags " + ", ".join(self._tags(user)) + ": Tether never takes over such "
                    "a user; delete or rename it, then retry")
            try:
                self._converge(api, names, secret, limits)
            except ClusterError as exc:
                failure = exc.message
                if own_vhost is None and not isinstance(exc, TransientError):
                    try:
                        self._delete(api, names)
                    except ClusterError as cleanup_exc:  # recorded; a retry converges
                        failure += f" (clean-up also failed: {cleanup_exc.message})"
                raise rewrap(exc, f"provisioning {names.base} on RabbitMQ at {t.where} failed: "
                                  f"{failure}") from None
        return self._credentials(t, names, secret)

    @staticmethod
    def _credentials(t: _Target, names: ResourceNames, secret: str) -> Credentials:
        return Credentials({"user": names.login, "password": secret, "host": t.amqp_host,
                            "port": t.amqp_port, "vhost": names.base})

    def _converge(self, api: _Api, names: ResourceNames, secret: str,
                  limits: dict[str, int | None]) -> None:
        vhost, user = _p(names.base), _p(names.login)
        api.call("PUT", f"/vhosts/{vhost}",
                 {"description": _description(names), "tags": "tether"})
        for limit, value in limits.items():
            if value is None:
                api.call("DELETE", f"/vhost-limits/{vhost}/{limit}", ok_missing=True)
            else:
                api.call("PUT", f"/vhost-limits/{vhost}/{limit}", {"value": value})
        api.call("PUT", f"/users/{user}", {"password": secret, "tags": ""})
        api.call("PUT", f"/permissions/{vhost}/{user}", FULL)
        # RabbitMQ gave the admin full rights on the vhost it created: take them back, and any
        # right given by hand to someone else there, or to the user elsewhere
        for kind, other_vhost, other_user in self._foreign_permissions(api, names):
            api.call("DELETE", f"/{kind}/{_p(other_vhost)}/{_p(other_user)}", ok_missing=True)

    @staticmethod
    def _held_limits(api: _Api, names: ResourceNames) -> dict[str, int | None]:
        """The vhost's limits as the server holds them (None: no limit)."""
        found = api.json(f"/vhost-limits/{_p(names.base)}", ok_missing=True) or []
        values: dict[str, Any] = {}
        for entry in found if isinstance(found, list) else []:
            if isinstance(entry, dict) and entry.get("vhost") == names.base:
                values.update(entry.get("value") or {})
        held: dict[str, int | None] = {}
        for limit, _ in _LIMITS:
            value = values.get(limit)
            held[limit] = int(value) if isinstance(value, int) and value >= 0 else None
        return held

    @staticmethod
    def _foreign_permissions(api: _Api, names: ResourceNames,
                             also: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
        """(kind, vhost, user) of every permission or topic permission of another user on the
        instance's vhost, or of its user (its login, `names.login`) on another vhost. `also`:
        users whose permission on the vhost counts as the login's (old logins still in use),
        and whose permissions elsewhere are listed too."""
        users = (names.login, *also)
        found: list[tuple[str, str, str]] = []
        for kind in ("permissions", "topic-permissions"):
            held = [*(api.json(f"/vhosts/{_p(names.base)}/{kind}", ok_missing=True) or [])]
            for user in users:
                held += api.json(f"/users/{_p(user)}/{kind}", ok_missing=True) or []
            for entry in held:
                key = (kind, str(entry.get("vhost")), str(entry.get("user")))
                if not (key[1] == names.base and key[2] in users) and key not in found:
                    found.append(key)
        return found

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        check_names(names)
        with self._api(cluster) as api:
            own_vhost, user = self._state(api, names)
        return bool(own_vhost) or (user is not None and not self._tags(user))

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The vhost (there, Tether's), the user (there, no tags, full rights on its vhost and
        none elsewhere) and who else may use the vhost (nobody, the admin included).

        An old login a running release may still use (`names.retiring`) may use the vhost; it
        is checked as the user is otherwise (no tags, its permission there full or none, none
        elsewhere). That it is gone is no difference: that is where a revoke takes it."""
        check_names(names)
        v, u = names.base, names.login
        limits = _vhost_limits(cluster)
        differences: list[str] = []
        with self._api(cluster) as api:
            own_vhost, user = self._state(api, names)
            own = api.json(f"/permissions/{_p(v)}/{_p(u)}", ok_missing=True) if (
                own_vhost and user is not None) else None
            held = self._held_limits(api, names) if own_vhost else limits
            olds = {old: api.json(f"/users/{_p(old)}", ok_missing=True)
                    for old in names.old_logins}
            olds = {old: found for old, found in olds.items() if found is not None}
            old_own = {old: api.json(f"/permissions/{_p(v)}/{_p(old)}", ok_missing=True)
                       for old in olds} if own_vhost else {}
            foreign = self._foreign_permissions(api, names, tuple(olds)) if (
                own_vhost or user is not None or olds) else []
        if own_vhost is None:
            differences.append(lost(f"vhost {v}"))
        elif own_vhost is False:
            differences.append(f"vhost {v} is not marked as Tether's: Tether does not take it "
                               "over")
        differences += [f"vhost {v} has {limit} {_limit_text(held[limit])}, not "
                        f"{_limit_text(wanted)}"
                        for limit, wanted in limits.items() if held[limit] != wanted]
        if user is None:
            differences.append(f"user {u} is missing")
        else:
            if self._tags(user):
                differences.append(f"user {u} has the tags {', '.join(self._tags(user))}")
            if own_vhost and own is None:
                differences.append(f"user {u} has no permission on vhost {v}")
            elif own is not None and any(own.get(k) != FULL[k] for k in FULL):
                rights = " ".join(f"{k}={own.get(k)!r}" for k in FULL)
                differences.append(f"the permission of user {u} on vhost {v} is {rights}, not "
                                   "'.*' for all")
        for old, found in olds.items():
            if self._tags(found):
                differences.append(f"user {old} has the tags {', '.join(self._tags(found))}")
            permission = old_own.get(old)
            if permission is not None and any(permission.get(k) != FULL[k] for k in FULL):
                rights = " ".join(f"{k}={permission.get(k)!r}" for k in FULL)
                differences.append(f"the permission of user {old} on vhost {v} is {rights}, "
                                   "not '.*' for all")
        for kind, other_vhost, other_user in foreign:
            what = "a topic permission" if kind == "topic-permissions" else "a permission"
            differences.append(f"user {other_user} has {what} on vhost {other_vhost}")
        return Observation(exists=bool(own_vhost) or (user is not None and not self._tags(user)),
                           differences=tuple(differences))

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Delete the vhost (its queues, exchanges and messages go with it; connections to it
        are closed) and the user, with every login a rotation made. A vhost or user of that
        name that is not Tether's is left alone."""
        check_names(names)
        with self._api(cluster) as api:
            try:
                self._delete(api, names)
            except ClusterError as exc:
                raise rewrap(exc, f"removing {names.base} from RabbitMQ at "
                                  f"{api.target.where} failed: {exc.message}") from None

    def _delete(self, api: _Api, names: ResourceNames) -> None:
        own_vhost, _ = self._state(api, names)
        if own_vhost:
            api.call("DELETE", f"/vhosts/{_p(names.base)}", ok_missing=True,
                     timeout=DELETE_TIMEOUT)
        elif own_vhost is False:
            log.warning("vhost %s on %s was not made by Tether: leaving it alone", names.base,
                        api.target.where)
        for login in self._logins(api, names):
            self._delete_user(api, login)

    def _logins(self, api: _Api, names: ResourceNames) -> list[str]:
        """The instance's users: `NAME` and every login a rotation made (`NAME_<n>`), whatever
        the store knows of them (a crash may have left one it never recorded)."""
        users = api.json("/users") or []
        return [str(u.get("name")) for u in users
                if isinstance(u, dict) and names.is_login(str(u.get("name")))]

    def _delete_user(self, api: _Api, login: str) -> None:
        """Delete one of the instance's users (not one with tags: not Tether's) and close its
        connections; succeeds when it is gone."""
        user = api.json(f"/users/{_p(login)}", ok_missing=True)
        if user is not None and self._tags(user):
            log.warning("user %s on %s has tags: not Tether's, leaving it alone", login,
                        api.target.where)
            return
        if user is not None:
            api.call("DELETE", f"/users/{_p(login)}", ok_missing=True)
        self._close_connections(api, login)

    @staticmethod
    def _close_connections(api: _Api, user: str) -> None:
        """Close the AMQP connections a user still holds: RabbitMQ closes a deleted user's
        connections itself (3.10 does), this closes any a broker left open."""
        connections = api.json("/connections?columns=name,user") or []
        for connection in connections:
            if isinstance(connection, dict) and connection.get("user") == user:
                api.call("DELETE", f"/connections/{_p(str(connection.get('name')))}",
                         ok_missing=True)

    # -- Rotatable --------------------------------------------------------------------------------

    def add_login(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Make (or converge) the user `names.login` beside the instance's other users, with
        `secret`, no tags and full rights on the instance's vhost (and none elsewhere). The
        vhost must be there (a repair makes it again). On a final failure a user this call made
        is deleted again."""
        check_names(names)
        if names.login == names.base:
            raise ClusterError(f"user {names.base} is the instance's own user: a rotation makes "
                               "a login of another name")
        with self._api(cluster, secret) as api:
            t = api.target
            if t.user == names.login:
                raise ClusterError(f"the cluster's admin user is named {t.user!r} like this "
                                   "instance's login: put another administrator in the cluster "
                                   "URL")
            own_vhost, user = self._state(api, names)
            if not own_vhost:
                raise ClusterError(f"the vhost {names.base} is missing on RabbitMQ at {t.where}: "
                                   "the instance must be repaired before its credentials can be "
                                   "rotated (the reconciler repairs it, or remove and add it "
                                   "again)")
            if user is not None and self._tags(user):
                raise ClusterError(f"a user named {names.login} exists already on RabbitMQ at "
                                   f"{t.where} with tags: Tether never takes over such a user; "
                                   "delete or rename it, then retry")
            try:
                api.call("PUT", f"/users/{_p(names.login)}", {"password": secret, "tags": ""})
                api.call("PUT", f"/permissions/{_p(names.base)}/{_p(names.login)}", FULL)
                for kind in ("permissions", "topic-permissions"):  # its rights elsewhere
                    held = api.json(f"/users/{_p(names.login)}/{kind}", ok_missing=True) or []
                    for entry in held:
                        if str(entry.get("vhost")) != names.base:
                            api.call("DELETE", f"/{kind}/{_p(str(entry.get('vhost')))}/"
                                               f"{_p(names.login)}", ok_missing=True)
            except ClusterError as exc:
                failure = exc.message
                if user is None and not isinstance(exc, TransientError):
                    try:
                        self._delete_user(api, names.login)
                    except ClusterError as cleanup_exc:  # recorded; a retry converges
                        failure += f" (clean-up also failed: {cleanup_exc.message})"
                raise rewrap(exc, f"making the login {names.login} on RabbitMQ at {t.where} "
                                  f"failed: {failure}") from None
        return self._credentials(t, names, secret)

    def revoke_login(self, cluster: ClusterSpec, names: ResourceNames, login: str) -> None:
        """Delete an old user of the instance (never `names.login`) and close its
        connections."""
        check_names(names)
        if login == names.login or not names.is_login(login):
            raise ClusterError(f"refusing to revoke {login!r}: not an old login of "
                               f"{names.base} (its current login is {names.login})")
        with self._api(cluster) as api:
            try:
                self._delete_user(api, login)
            except ClusterError as exc:
                raise rewrap(exc, f"revoking the login {login} on RabbitMQ at "
                                  f"{api.target.where} failed: {exc.message}") from None

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        """`{P}_AMQP_BROKER_URL`, and `BROKER_URL` for the DEFAULT prefix (Divio names)."""
        url = broker_url(credentials)
        out = {f"{prefix}_AMQP_BROKER_URL": url}
        if prefix == "DEFAULT":
            out["BROKER_URL"] = url
        return out


def broker_url(credentials: Credentials) -> str:
    """`amqp://USER:PASSWORD@HOST:PORT/VHOST`, user, password and vhost URL-encoded."""
    c = credentials.values
    return (f"amqp://{quote(str(c['user']), safe='')}:{quote(str(c['password']), safe='')}"
            f"@{host_in_url(str(c['host']))}:{int(c['port'])}/{quote(str(c['vhost']), safe='')}")


PROVIDER = RabbitMQProvider
