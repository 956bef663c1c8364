"""The subset of Divio's API that the official Divio CLI (`divio-cli` 4.x) reads, so that
`DIVIO_ZONE=http://HOST:PORT divio ...` works against Tether unmodified (docs/divio-api.md is the
contract: paths, parameters, fields and how each maps onto Tether's objects).

Routes are as thin as /api/v1's: every answer is built from what `tether.actions` return, asked
with the caller's token, so the role and project scope of the token decide exactly as they do
there (no second set of rules). Objects are named by stable public ids (`tether.publicids`).
Tokens are Tether's own, sent the Divio way (`Authorization: Token TOKEN`, read by the CLI from
~/.netrc) or as `Bearer TOKEN`. Errors have the shapes the CLI reads: `detail` and
`non_field_errors` (the CLI prints the latter under its own message for the status code).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.access import Need
from tether.actions import clusters, deployments, projects, services, variables
from tether.actions.common import Context
from tether.actions.variables import SECRET_SOURCES
from tether.api.auth import caller_for
from tether.errors import NotFound, TetherError, Unauthorized, UserError
from tether.paging import PageArgs
from tether.providers.registry import provider_class
from tether.publicids import Kind, find, public_id

#: results per page when the client names no `page_size`, and the most it may ask for
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: what `divio app deploy --build-mode` may say (Tether builds nothing: checked, then ignored)
BUILD_MODES = ("AUTO", "ADOPT", "FORCE")

def service_type(kind: str) -> str:
    """The Divio service type of a kind (`divio services list` shows it; the CLI's backup
    commands look for DATABASE and STORAGE instances): its provider's `category`."""
    try:
        return provider_class(kind).category or kind.upper().replace("-", "_")
    except UserError:
        return kind.upper().replace("-", "_")


def service_title(kind: str) -> str:
    """What a kind is, in a few words: its provider's `title` up to the colon."""
    try:
        return provider_class(kind).title.split(":", 1)[0] or kind
    except UserError:
        return kind


def service_status(state: str) -> str:
    """A lifecycle state the Divio way: `pending attachment` is `PENDING_ATTACHMENT`."""
    return state.upper().replace(" ", "_")


def _token_header(authorization: str | None) -> str | None:
    """`Token X` (how divio-cli sends it) as `Bearer X` (how Tether's auth reads it)."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() == "token" and secret.strip():
        return f"Bearer {secret.strip()}"
    return authorization


class FieldError(UserError):
    """A field of a request body that is missing or wrong (400, with the field's messages)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def _error(exc: TetherError) -> JSONResponse:
    status = exc.status if isinstance(exc, UserError) else 500
    if status == 409:
        # a conflict with the current state (the prefix is taken, a deploy is running) is a
        # request that could not be processed: the CLI then prints "Request could not be
        # processed" and Tether's reason, instead of blaming the connection
        status = 400
    message = exc.message if isinstance(exc, UserError) else "internal error: see the server log"
    body: dict[str, Any] = {"detail": message, "non_field_errors": [message], "code": exc.code}
    if isinstance(exc, FieldError):
        body[exc.field] = [exc.reason]
    return JSONResponse(body, status)


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (divio-cli sends its data as JSON)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise UserError("the body is not JSON: send the fields as a JSON object") from None
    if not isinstance(data, dict):
        raise UserError("the body must be a JSON object of fields")
    return data


class Directory:
    """The projects and environments the caller's token may see, with their public ids: built
    from `projects.list_projects` (which applies the token's project scope) once per call."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.projects = projects.list_projects(ctx)

    def pid(self, kind: Kind, key: int | str) -> str:
        return public_id(self.ctx.box, kind, key)

    def project(self, value: str | None) -> dict[str, Any]:
        """The project of a public id, or 404 (also for a project the token is not granted: its
        id says nothing about it, so a 403 would only confirm that it exists)."""
        found = find(self.ctx.box, Kind.PROJECT, value, [p["id"] for p in self.projects])
        if found is None:
            raise NotFound(f"no application with the id {value!r}: give --remote-id the UUID "
                           "or the numeric id of a project your token may see")
        return next(p for p in self.projects if p["id"] == found)

    def environments(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(p, e) for p in self.projects for e in p["environments"]]

    def environment(self, value: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        pairs = self.environments()
        found = find(self.ctx.box, Kind.ENVIRONMENT, value, [e["id"] for _, e in pairs])
        if found is None:
            raise NotFound(f"no environment with the id {value!r}")
        return next((p, e) for p, e in pairs if e["id"] == found)

    def targets(self, request: Request, required: bool = True
                ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The environments a list asks for: `environment` (given once, several times, or
        comma-separated), restricted to or else all those of `application`; with neither, a
        400 when `required`, else every environment the token may see."""
        targets = [self.environment(value) for value in _ids(request, "environment")]
        applications = _ids(request, "application")
        if applications:
            wanted = {self.project(value)["id"] for value in applications}
            return [(p, e) for p, e in (targets or self.environments()) if p["id"] in wanted]
        if targets or not required:
            return targets or self.environments()
        raise UserError("name an environment (environment=UUID) or an application "
                        "(application=UUID)")

    def region_id(self, name: str) -> str:
        return self.pid(Kind.REGION, name)

    # --- views -------------------------------------------------------------------------------

    def application_view(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "uuid": self.pid(Kind.PROJECT, p["id"]),
            "id": p["id"],
            "name": p["name"],
            "slug": p["name"],
            "region": self.region_id(p["region"]),
            "region_name": p["region"],
            "organisation": None,
            "repository": None,
            "environments": [self.pid(Kind.ENVIRONMENT, e["id"]) for e in p["environments"]],
            "created_at": p["created_at"],
            # `divio app service-instances add ENV` reads the environment's uuid from here
            **{f"{e['name']}_status": {"uuid": self.pid(Kind.ENVIRONMENT, e["id"]),
                                        "slug": e["name"], "url": e["url"]}
               for e in p["environments"]},
        }

    def environment_view(self, p: dict[str, Any], e: dict[str, Any]) -> dict[str, Any]:
        finished = [d for d in deployments.list_deployments(self.ctx, p["name"], e["name"],
                                                               PageArgs(limit=20))
                    if d["finished_at"]]
        last = finished[0] if finished else None
        return {
            "uuid": self.pid(Kind.ENVIRONMENT, e["id"]),
            "slug": e["name"],
            "name": e["name"],
            "application": self.pid(Kind.PROJECT, p["id"]),
            "url": e["url"],
            "last_finished_deployment": None if last is None else {
                "uuid": self.pid(Kind.DEPLOYMENT, last["id"]),
                "status": last["status"],
                "success": last["success"],
                "ended_at": last["finished_at"],
            },
        }


    def instance_view(self, p: dict[str, Any], e: dict[str, Any],
                      inst: dict[str, Any]) -> dict[str, Any]:
        return {
            "uuid": self.pid(Kind.INSTANCE, inst["id"]),
            "prefix": inst["prefix"],
            "type": service_type(str(inst["kind"])),
            "service": self.pid(Kind.SERVICE, inst["service"]),
            "service_name": inst["service"],
            "service_status": service_status(str(inst["state"])),
            "state": inst["state"],
            "region": self.region_id(p["region"]),
            "environment": self.pid(Kind.ENVIRONMENT, e["id"]),
            "created_at": inst["created_at"],
        }

    def deployment_view(self, dep: dict[str, Any]) -> dict[str, Any]:
        """A deployment as `divio app deploy` polls it: it waits for `ended_at`, shows
        `percent` and `status`, and fails when `success` is false."""
        p = next(p for p in self.projects if p["name"] == dep["project"])
        e = next(e for e in p["environments"] if e["name"] == dep["environment"])
        return {
            "uuid": self.pid(Kind.DEPLOYMENT, dep["id"]),
            "id": dep["id"],
            "environment": self.pid(Kind.ENVIRONMENT, e["id"]),
            "environment_slug": e["name"],
            "application": self.pid(Kind.PROJECT, p["id"]),
            "status": dep["status"],
            "percent": dep["percent"] or 0,
            "success": dep["success"],
            "error": dep["error"],
            "author": dep["requested_by"],
            "created_at": dep["created_at"],
            "started_at": dep["started_at"],
            "ended_at": dep["finished_at"],
        }

    def deployment(self, value: str | None) -> dict[str, Any]:
        """The deployment of a public id (404 also for one of a project the token may not
        read, as for applications)."""
        found = find(self.ctx.box, Kind.DEPLOYMENT, value,
                     deployments.visible_deployment_ids(self.ctx))
        if found is None:
            raise NotFound(f"no deployment with the id {value!r}")
        return deployments.get_deployment(self.ctx, found, logs_after=None)


class Page:
    """Paging the Divio way: `page_size` and `page` in, `count`, `next`, `previous` (absolute
    URLs, which the CLI requests as they are) and `results` out."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.size = _positive(request.query_params.get("page_size"), "page_size",
                              DEFAULT_PAGE_SIZE)
        if self.size > MAX_PAGE_SIZE:
            raise UserError(f"page_size may be at most {MAX_PAGE_SIZE}")
        self.number = _positive(request.query_params.get("page"), "page", 1)

    def answer(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        start = (self.number - 1) * self.size
        url = self.request.url
        more = start + self.size < len(items)
        return {
            "count": len(items),
            "next": str(url.include_query_params(page=self.number + 1)) if more else None,
            "previous": (str(url.include_query_params(page=self.number - 1))
                         if self.number > 1 else None),
            "results": items[start:start + self.size],
        }


def _positive(value: str | None, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _ids(request: Request, name: str) -> list[str]:
    """A filter given once, several times, or comma-separated."""
    return [part for value in request.query_params.getlist(name)
            for part in value.split(",") if part.strip()]


# --- What each route answers (run in a thread, with the caller's context) ----------------------

def me(ctx: Context, request: Request) -> dict[str, Any]:
    p = ctx.principal
    return {
        "uuid": public_id(ctx.box, Kind.TOKEN, p.token_id if p.token_id is not None else p.name),
        "username": p.name,
        "email": p.owner or p.name,
        "first_name": "",
        "last_name": "",
        "role": p.role.value,
        "projects": sorted(p.projects) if p.projects is not None else None,
    }


def list_regions(ctx: Context, request: Request) -> dict[str, Any]:
    page = Page(request)
    return page.answer([
        {"uuid": public_id(ctx.box, Kind.REGION, r["name"]), "name": r["name"],
         "slug": r["name"], "family": r["family"]}
        for r in clusters.list_regions(ctx)])


def _region_name(ctx: Context, value: str) -> str:
    """A region named by its public id (or by its name, for people typing it)."""
    names = [str(r["name"]) for r in clusters.list_regions(ctx)]
    found = value if value in names else find(ctx.box, Kind.REGION, value, names)
    if found is None:
        raise NotFound(f"no region with the id {value!r}: `divio regions list` shows them")
    return found


def list_services(ctx: Context, request: Request) -> dict[str, Any]:
    page = Page(request)
    wanted = request.query_params.get("region")
    if wanted:
        regions = [_region_name(ctx, wanted)]
    else:
        regions = [str(r["name"]) for r in clusters.list_regions(ctx)]
    website = request.query_params.get("website") or request.query_params.get("application")
    if website:
        home = str(Directory(ctx).project(website)["region"])
        regions = [r for r in regions if r == home]
    offered: dict[str, dict[str, Any]] = {}
    for region in regions:
        for offer in services.catalog_view(ctx, region, None):
            name = str(offer["service"])
            entry = offered.setdefault(name, {
                "uuid": public_id(ctx.box, Kind.SERVICE, name),
                "name": name,
                "slug": name,
                "type": service_type(str(offer["kind"])),
                "kind": offer["kind"],
                "version": offer["version"],
                "description": f"{service_title(str(offer['kind']))} "
                               f"{offer['version']}".strip(),
                "regions": [],
                "shared": False,
                "private": False,
            })
            entry["regions"].append(public_id(ctx.box, Kind.REGION, region))
            entry["shared"] = bool(entry["shared"] or offer["shared"])
            entry["private"] = bool(entry["private"] or offer["private"])
    return page.answer([offered[name] for name in sorted(offered)])


def list_applications(ctx: Context, request: Request) -> dict[str, Any]:
    """`?slug=` (the CLI's slug to UUID) and `?id=` (the legacy numeric remote id)."""
    page = Page(request)
    d = Directory(ctx)
    slug = request.query_params.get("slug")
    number = request.query_params.get("id")
    found = [p for p in d.projects
             if (slug is None or p["name"] == slug) and (number is None or str(p["id"]) == number)]
    return page.answer([d.application_view(p) for p in found])


def show_application(ctx: Context, request: Request, application: str) -> dict[str, Any]:
    d = Directory(ctx)
    return d.application_view(d.project(application))


def list_environments(ctx: Context, request: Request) -> dict[str, Any]:
    page = Page(request)
    d = Directory(ctx)
    pairs = d.environments()
    application = request.query_params.get("application")
    if application:
        project_id = d.project(application)["id"]
        pairs = [(p, e) for p, e in pairs if p["id"] == project_id]
    slug = request.query_params.get("slug")
    if slug:
        pairs = [(p, e) for p, e in pairs if e["name"] == slug]
    return page.answer([d.environment_view(p, e) for p, e in pairs])


def show_environment(ctx: Context, request: Request, environment: str) -> dict[str, Any]:
    d = Directory(ctx)
    return d.environment_view(*d.environment(environment))


def list_variables(ctx: Context, request: Request) -> dict[str, Any]:
    """Every variable the application gets at its next deploy (STAGE, SECRET_KEY, the services'
    and the custom ones), as `tether project env-vars --all` shows them; secret values in clear
    for a token that may see them (`is_sensitive` marks them), masked for one that may not."""
    page = Page(request)
    d = Directory(ctx)
    targets = d.targets(request)
    name = request.query_params.get("name")
    results = []
    for p, e in targets:
        reveal = ctx.principal.may(Need.REVEAL, p["name"])
        env_id = d.pid(Kind.ENVIRONMENT, e["id"])
        for var in variables.list_variables(ctx, p["name"], e["name"], True, reveal):
            if not var["next_release"] or (name is not None and var["name"] != name):
                continue
            results.append({
                "uuid": d.pid(Kind.VARIABLE, f"{e['id']}/{var['name']}"),
                "name": var["name"],
                "value": var["value"],
                "is_sensitive": bool(var["hidden"] or var["source"] in SECRET_SOURCES),
                "is_read_only": var["source"] != "custom",
                "source": var["source"],
                "prefix": var["prefix"],
                "environment": env_id,
            })
    return page.answer(results)


def list_service_instances(ctx: Context, request: Request) -> dict[str, Any]:
    page = Page(request)
    d = Directory(ctx)
    targets = d.targets(request)
    return page.answer([d.instance_view(p, e, inst) for p, e in targets
                        for inst in services.list_instances(ctx, p["name"], e["name"])])


def _field(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    """A string field of a request body; a missing or malformed one is a 400 naming it, in
    the shape Django REST framework gives (the field's own list of messages)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise FieldError(name, "This field is required.")
        return None
    if not isinstance(value, str):
        raise FieldError(name, "Not a valid string.")
    return value


def add_service_instance(ctx: Context, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """`divio app service-instances add ENV --prefix P --region R --service S`: the instance
    is added (state `new`) as `tether service add` adds it; the next deploy provisions and
    attaches it."""
    d = Directory(ctx)
    p, e = d.environment(_field(body, "environment"))
    prefix = str(_field(body, "prefix"))
    region = _field(body, "region", required=False)
    if region is not None:
        try:
            name = _region_name(ctx, region)
        except NotFound:
            raise FieldError("region", f"no region with the id {region!r}: `divio regions "
                             "list` shows them") from None
        if name != p["region"]:
            raise FieldError("region", f"the application is in region {p['region']}, not "
                             f"{name}: give its region ({d.region_id(p['region'])})")
    wanted = str(_field(body, "service"))
    names = [str(o["service"]) for o in services.catalog_view(ctx, p["region"], None)]
    service = wanted if wanted in names else find(ctx.box, Kind.SERVICE, wanted, names)
    if service is None:
        raise FieldError("service", f"no service with the id {wanted!r} in region "
                         f"{p['region']}: `divio services list --region "
                         f"{d.region_id(p['region'])}` shows them")
    inst = services.add(ctx, p["name"], e["name"], service, prefix)
    return d.instance_view(p, e, inst)


def create_deployment(ctx: Context, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """`divio app deploy ENV`: a deployment as `tether deploy ENV` asks for one. Tether builds
    nothing, so `build_mode` (AUTO, ADOPT, FORCE) is checked and has no effect."""
    d = Directory(ctx)
    p, e = d.environment(_field(body, "environment"))
    mode = _field(body, "build_mode", required=False)
    if mode is not None and mode.upper() not in BUILD_MODES:
        raise FieldError("build_mode", f"{mode!r} is not one of {', '.join(BUILD_MODES)}")
    return d.deployment_view(deployments.deploy(ctx, p["name"], e["name"]))


def list_deployments(ctx: Context, request: Request) -> dict[str, Any]:
    """`divio app deployments list` and the look-up of `divio app deploy` (the newest first:
    it reads `results[0]` to attach to a deployment still running)."""
    page = Page(request)
    d = Directory(ctx)
    targets = d.targets(request, required=False)
    found = [dep for p, e in targets
             for dep in deployments.list_deployments(ctx, p["name"], e["name"])]
    found.sort(key=lambda dep: int(dep["id"]), reverse=True)
    return page.answer([d.deployment_view(dep) for dep in found])


def show_deployment(ctx: Context, request: Request, deployment: str) -> dict[str, Any]:
    """One deployment, with the names of the variables its release was started with
    (`divio app deployments get` shows them)."""
    d = Directory(ctx)
    view = d.deployment_view(d.deployment(deployment))
    view["environment_variables"] = sorted(
        deployments.deployment_variables(ctx, int(view["id"])))
    return view


def deployment_logs(ctx: Context, request: Request, deployment: str) -> dict[str, Any]:
    """`divio app deploy-log ENV` (the environment's last finished deployment): the log as
    text, one line per entry."""
    d = Directory(ctx)
    dep = d.deployment(deployment)
    lines = deployments.get_deployment(ctx, int(dep["id"]), logs_after=0)["logs"]
    assert isinstance(lines, list)
    return {"uuid": d.pid(Kind.DEPLOYMENT, dep["id"]),
            "logs": "".join(f"{entry['at']} {entry['line']}\n" for entry in lines)}


def deployment_variables(ctx: Context, request: Request, deployment: str) -> dict[str, Any]:
    """`divio app deployments get-var UUID NAME`: the variables the deployment's release was
    started with (masked for a token that may not see the project's secrets)."""
    d = Directory(ctx)
    view = d.deployment_view(d.deployment(deployment))
    view["environment_variables"] = deployments.deployment_variables(ctx, int(view["id"]))
    return view


def divio_router(base: Context) -> APIRouter:
    """The routes, mounted beside /api/v1 by `create_app` (outside its OpenAPI schema: they are
    Divio's contract, not Tether's)."""
    router = APIRouter(include_in_schema=False)

    async def answer(request: Request, fn: Callable[..., dict[str, Any]],
                     *args: str, body: bool = False, status: int = 200) -> JSONResponse:
        try:
            caller = await run_in_threadpool(
                caller_for, base.store, _token_header(request.headers.get("authorization")))
            ctx = base.as_principal(caller.principal)
            data = [await _json_body(request)] if body else []
            return JSONResponse(await run_in_threadpool(fn, ctx, request, *args, *data),
                                status)
        except Unauthorized as exc:
            if request.headers.get("authorization"):
                return _error(exc)
            return _error(Unauthorized("missing token: send `Authorization: Token TOKEN` "
                                       "(divio-cli reads it from ~/.netrc under the host of "
                                       "DIVIO_ZONE)"))
        except TetherError as exc:
            return _error(exc)

    @router.get("/iam/v3/me/")
    async def get_me(request: Request) -> JSONResponse:
        return await answer(request, me)

    @router.get("/apps/v3/regions/")
    async def get_regions(request: Request) -> JSONResponse:
        return await answer(request, list_regions)

    @router.get("/apps/v3/services/")
    async def get_services(request: Request) -> JSONResponse:
        return await answer(request, list_services)

    @router.get("/apps/v3/applications/")
    async def get_applications(request: Request) -> JSONResponse:
        return await answer(request, list_applications)

    @router.get("/legacy/v3/applications/")
    async def get_legacy_applications(request: Request) -> JSONResponse:
        return await answer(request, list_applications)

    @router.get("/apps/v3/applications/{application}/")
    async def get_application(request: Request, application: str) -> JSONResponse:
        return await answer(request, show_application, application)

    @router.get("/apps/v3/environments/")
    async def get_environments(request: Request) -> JSONResponse:
        return await answer(request, list_environments)

    @router.get("/apps/v3/environments/{environment}/")
    async def get_environment(request: Request, environment: str) -> JSONResponse:
        return await answer(request, show_environment, environment)

    @router.get("/apps/v3/environment-variables/")
    async def get_variables(request: Request) -> JSONResponse:
        return await answer(request, list_variables)

    @router.get("/apps/v3/service-instances/")
    async def get_service_instances(request: Request) -> JSONResponse:
        return await answer(request, list_service_instances)

    @router.post("/apps/v3/service-instances/")
    async def post_service_instance(request: Request) -> JSONResponse:
        return await answer(request, add_service_instance, body=True, status=201)

    @router.get("/apps/v3/deployments/")
    async def get_deployments(request: Request) -> JSONResponse:
        return await answer(request, list_deployments)

    @router.post("/apps/v3/deployments/")
    async def post_deployment(request: Request) -> JSONResponse:
        return await answer(request, create_deployment, body=True, status=201)

    @router.get("/apps/v3/deployments/{deployment}/")
    async def get_deployment(request: Request, deployment: str) -> JSONResponse:
        return await answer(request, show_deployment, deployment)

    # divio-cli asks for these two without the trailing slash
    @router.get("/apps/v3/deployments/{deployment}/logs")
    async def get_deployment_logs(request: Request, deployment: str) -> JSONResponse:
        return await answer(request, deployment_logs, deployment)

    @router.get("/apps/v3/deployments/{deployment}/environment-variables")
    async def get_deployment_variables(request: Request, deployment: str) -> JSONResponse:
        return await answer(request, deployment_variables, deployment)

    return router

