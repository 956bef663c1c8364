"""The REST API (`/api/v1`). Routes are thin: they parse, authenticate and call `tether.actions`;
no lifecycle rule lives here. Errors the user can fix are 4xx with `{"error": {code, message}}`."""


import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tether import __version__
from tether.access import Forbidden
from tether.actions import (
    backups,
    clusters,
    deployments,
    history,
    projects,
    services,
    tokens,
    variables,
)
from tether.actions.common import Context
from tether.api import limits
from tether.api.auth import SignedIn, SignInThrottle, caller_for, create_session
from tether.api.divio import divio_router
from tether.api.kept import (
    KeptAnswers,
    KeptPage,
    caller_key,
    page_headers,
    page_key,
    unexpired,
)
from tether.api.lane import WaitedAdds
from tether.api.models import (
    ERRORS,
    MAX_WAIT,
    BackupIn,
    ClusterIn,
    ConfirmQuery,
    CopyIn,
    Cursor,
    EnvironmentIn,
    EnvPath,
    EnvQuery,
    IdPath,
    LogsAfter,
    NamePath,
    PageLimit,
    PageSize,
    PrefixPath,
    PrefixQuery,
    ProjectIn,
    ProjectPatch,
    ProjectPath,
    ProjectQuery,
    RegionQuery,
    RestoreIn,
    ScheduleIn,
    ServiceIn,
    SessionIn,
    TokenIn,
    TokenNamePath,
    VariableIn,
)
from tether.api.models import (
    error_doc as _error_doc,
)
from tether.backups import transfer
from tether.engine.worker import Worker
from tether.errors import TetherError, TooManyAttempts, Unauthorized, UserError
from tether.paging import Page, PageArgs
from tether.store.readcache import ReadCache
from tether.web.routes import STATIC_DIR, web_router

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tether.store.models import Operation

T = TypeVar("T")

FINISHED = ("succeeded", "failed")
#: what a deployment's status may be
DeploymentStatus = Literal["queued", "running", "succeeded", "failed"]


def json_bytes(content: Any) -> bytes:
    """`content` as FastAPI's JSONResponse sends it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()


def paged(request: Request, response: Response, page: Page[Any]) -> list[Any]:
    """A page as the JSON array it always was, with the next page's URL in a `Link` header
    (RFC 8288) when there is one."""
    response.headers.update(page_headers(request.url, page.after))
    return list(page)


async def long_poll(wait: float, fetch: Callable[[], Awaitable[T]], ready: Callable[[T], bool],
                    *, recheck: Callable[[], Awaitable[None]],
                    pause: Callable[[float], Awaitable[None]] | None = None,
                    recheck_every: float = 1.0) -> T:
    """The one loop of every long poll (`?wait=`): `fetch` an answer and return it once it is
    `ready` or `wait` seconds have passed (one fetch when `wait` is 0); between fetches,
    `pause(seconds_left)` (by default a sleep of at most 0.2 s) and, at most every
    `recheck_every` s, `recheck` who is asking, so a token revoked while it waits is refused by
    its next pass (`recheck` raises), not only by its next call."""
    deadline = time.monotonic() + wait
    checked = time.monotonic()
    while True:
        answer = await fetch()
        left = deadline - time.monotonic()
        if ready(answer) or left <= 0:
            return answer
        if pause is None:
            await asyncio.sleep(min(left, 0.2))
        else:
            await pause(left)
        if time.monotonic() - checked >= recheck_every:
            await recheck()
            checked = time.monotonic()


def error_response(exc: TetherError) -> JSONResponse:
    """A `TetherError` as the API answers it: 4xx for what the user can fix, else 500."""
    status = exc.status if isinstance(exc, UserError) else 500
    headers = ({"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts)
               else None)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status,
                        headers=headers)


class _API(FastAPI):
    """FastAPI with answers made in front of all of it (`front`): kept pages
    (`tether.api.kept`: a GET without a body that raises nothing) and waited adds
    (`tether.api.lane`) need neither FastAPI's own per-request work (its telemetry switch reads
    the environment on every call, routing, dependencies, validation) nor the error handling and
    body limits of its middleware, which together cost as much as the kept answer itself."""

    front: Callable[[ASGIApp], ASGIApp] | None = None
    _front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self._front
        if front is None:
            front = self._front = (super().__call__ if self.front is None
                                   else self.front(super().__call__))
        await front(scope, receive, send)


def create_app(base: Context, worker: Worker | None = None) -> FastAPI:
    """The API. With the `worker` of this process, clients waiting on an operation are answered
    as soon as it finishes; without one (another node runs it), the store is polled. Media files
    are never served here: they have an origin of their own (tether.media)."""
    app = _API(title="Tether", version=__version__,
                  description="Backing services for your applications: REST API. Every call "
                              "needs `Authorization: Bearer TOKEN` (the Services view sends its "
                              "browser session the same way: `POST /api/v1/sessions`).",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    #: who a header's token is, until a token or session is written; environments' variables,
    #: until anything is written; a kept page is sent before routing (tether.api.kept)
    callers: ReadCache[SignedIn] = ReadCache(base.store, 4096, version=base.store.auth_version)
    variable_pages: ReadCache[KeptPage] = ReadCache(base.store, 512)
    app.state.read_caches = {"callers": callers, "variables": variable_pages}
    app.front = lambda inner: KeptAnswers(
        WaitedAdds(inner, store=base.store, callers=callers, answer=waited_add,
                   error=error_response),
        store=base.store, callers=callers, pages=variable_pages)
    limits.install(app)  # bodies capped before anything reads them, auth included

    @app.exception_handler(TetherError)
    async def _tether_error(_: Request, exc: TetherError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["/".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]
        return JSONResponse({"error": {"code": "bad_request",
                                       "message": "invalid request: " + "; ".join(parts)}}, 422)

    async def remembered(cache: ReadCache[T], key: Hashable, compute: Callable[[], T],
                         usable: Callable[[T], bool] = lambda _: True) -> T:
        """`compute()`'s answer, from `cache` while nothing was written to the store since it
        was computed (and it is still `usable`). A hit on the embedded SQLite store takes no
        worker thread: its version is a local read of microseconds."""
        if base.store.version_is_local:
            kept, version = cache.lookup(key)
        else:
            kept, version = await run_in_threadpool(cache.lookup, key)
        if kept is not None and usable(kept):
            return kept

        def fresh() -> T:
            answer = compute()
            cache.keep(key, version, answer)
            return answer

        return await run_in_threadpool(fresh)

    async def context(request: Request,
                      authorization: Annotated[str | None, Header()] = None) -> Context:
        """Who is asking: the bearer token (the CLI, scripts) or browser session (the Services
        view) in the `Authorization` header, as the store says now: the answer is kept only
        until anything is written to the store (a revoked token or ended session is refused at
        once) and its expiry is checked on every call. Cookies are never read (see
        tether.web)."""
        caller = await remembered(callers, caller_key(authorization),
                                  lambda: caller_for(base.store, authorization), unexpired)
        request.state.session_id = caller.session_id
        request.state.authorization = authorization
        return base.as_principal(caller.principal)

    async def still_allowed(request: Request) -> None:
        """A long poll asks again who is calling: a token revoked (or a session ended) while
        it waits is refused by its next pass, not only by its next call."""
        await run_in_threadpool(caller_for, base.store, request.state.authorization)

    Ctx = Annotated[Context, Depends(context)]
    Wait = Annotated[float, Query(
        ge=0, le=MAX_WAIT, description="Answer once the operation this call queues has "
                                       "finished, waiting at most this many seconds (0: at "
                                       "once)")]

    async def queued_and_waited(ctx: Context, request: Request, wait: float,
                                queue: Callable[[Context, bool], dict[str, Any]],
                                reread: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """`queue(ctx, brief)`'s answer, a view with the `operation` it queued; with `wait`,
        the instance read again with that operation (`reread(operation_id)`) once it has
        finished, or as it is after `wait` s. Then `queue` is asked for a `brief` answer (the
        full view of an instance whose operation is queued would be made for nothing).

        When this process's worker has a free slot, the operation is claimed and run on a
        thread of this request (`Worker.run_here`): no hand-over to the worker's loop, no
        second request, and the answer goes out when the final write commits. It runs to its
        end even when `wait` s pass first (the answer then says it still runs)."""
        if not wait:
            return await call(queue, ctx, False)
        deadline = time.monotonic() + wait
        here = worker
        if here is None:  # another node runs it: wait for its end
            return await waited_for(ctx, request, deadline, await call(queue, ctx, True),
                                    reread)
        # what was queued, once it was (told the event loop only should `wait` run out: a
        # wake-up of the loop in the middle of the run would take the GIL from it for nothing)
        queued: list[dict[str, Any]] = []
        queueing_ended = threading.Event()
        claimed: list[int] = []

        def claim(s: "Session", op: "Operation") -> None:
            here.claim_in(s, op)
            claimed.append(op.id)

        # the loop is not told about the operation (it would race this thread for it), and
        # the operation is claimed in the transaction that queues it
        quiet = dataclasses.replace(ctx, notify=lambda: None, claim=claim)

        def queue_then_run() -> dict[str, Any] | None:
            """On one thread, one hand-over: queue (and claim); keep what was queued (the
            answer should `wait` run out); run it here and read it again."""
            since = here.signals
            ran, fresh = False, None
            try:
                try:
                    view = queue(quiet, True)
                    queued.append(view)
                finally:
                    queueing_ended.set()
                op = view.get("operation")
                if op is None:
                    return view
                if op["status"] in FINISHED:
                    return reread(op["id"])
                ran, fresh = here.run_here(op["id"], lambda: reread(op["id"]), since)
            finally:
                for op_id in claimed:  # claimed, but not run here: handed back
                    here.drop_claim(op_id)
                if claimed and not ran:
                    ctx.notify()  # the loop, or another node, runs it
            return fresh

        running = asyncio.ensure_future(call(queue_then_run))
        # answered after `wait` s, its error (if any) is in the operation; not logged twice
        running.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            done = await asyncio.wait_for(asyncio.shield(running),
                                          max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            done = None
        except Exception:
            if not queued:
                raise  # the call itself was refused, or failed: its error is the answer
            done = None  # queued, then claiming or reading failed here: the loop has it
        if done is not None:
            return done
        if not queueing_ended.is_set():  # still queueing after `wait` s (a slow store)
            await run_in_threadpool(queueing_ended.wait)
        if not queued:  # the call's error, once its thread has ended
            answer = await running
            if answer is not None:
                return answer
        return await waited_for(ctx, request, deadline, queued[0], reread)

    async def waited_for(ctx: Context, request: Request, deadline: float,
                         view: dict[str, Any],
                         reread: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """The instance read again (`reread`) once `view`'s operation has finished (long-polled
        until `deadline`), or as it is at `deadline`, with the operation as it is then. `view`
        may be brief (see `services.add`): it is only the answer when no operation waits."""
        op = view.get("operation")
        if op is None:
            return view
        if op["status"] not in FINISHED:
            await operation_when_finished(ctx, request, op["id"],
                                          max(0.0, deadline - time.monotonic()))
        return await call(reread, op["id"])

    api = APIRouter(prefix="/api/v1", responses=ERRORS)
    env_path = "/projects/{project}/environments/{env}"

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(fn, *args, **kwargs)

    @api.get("/status", tags=["meta"])
    async def status(ctx: Ctx) -> dict[str, Any]:
        """Who you are: the token's name, owner (`actor`, as the audit trail names you), role and
        the projects it is granted (null: every project)."""
        p = ctx.principal
        return {"version": __version__, "actor": ctx.actor, "token": p.name,
                "role": p.role.value,
                "projects": sorted(p.projects) if p.projects is not None else None}

    @api.get("/projects", tags=["projects"])
    async def list_projects(ctx: Ctx, request: Request, response: Response,
                            limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """The projects the token may see, by name: a page of `limit`; the next page's URL is
        in the `Link` header (rel="next")."""
        return paged(request, response, await call(projects.list_projects, ctx,
                                                   PageArgs(limit, after)))

    @api.post("/projects", status_code=201, tags=["projects"])
    async def create_project(ctx: Ctx, body: ProjectIn) -> dict[str, Any]:
        return await call(projects.create_project, ctx, body.name, body.region,
                          body.app_command, body.app_dir, body.health_path, body.health_timeout,
                          database=body.database)

    @api.post("/projects/{project}/environments", status_code=201, tags=["projects"])
    async def add_environment(ctx: Ctx, project: ProjectPath,
                              body: EnvironmentIn) -> dict[str, Any]:
        """Another environment beside test and live (e.g. staging), with a `DEFAULT`
        PostgreSQL unless `database` is false."""
        return await call(projects.add_environment, ctx, project, body.name,
                          database=body.database)

    @api.get("/projects/{project}", tags=["projects"])
    async def show_project(ctx: Ctx, project: ProjectPath) -> dict[str, Any]:
        return await call(projects.show_project, ctx, project)

    @api.patch("/projects/{project}", tags=["projects"])
    async def update_project(ctx: Ctx, project: ProjectPath, body: ProjectPatch) -> dict[str, Any]:
        return await call(projects.update_project, ctx, project, body.app_command,
                          body.health_path, body.app_dir, body.health_timeout)

    @api.get(env_path + "/variables", tags=["variables"])
    async def list_variables(ctx: Ctx, request: Request,
                             project: ProjectPath, env: EnvPath, all: bool = False,
                             reveal: bool = False, limit: PageLimit = 100,
                             after: Cursor = None) -> list[dict[str, Any]]:
        """Custom variables (by name); with `all`, every variable of the next deploy (STAGE,
        SECRET_KEY, the services' by service, then the custom ones). Secret values (service
        credentials, SECRET_KEY) are masked unless `reveal`. A page of `limit`; the next
        page's URL is in the `Link` header (rel="next")."""
        def compute() -> KeptPage:
            page = variables.list_variables(ctx, project, env, all, reveal,
                                            PageArgs(limit, after))
            return json_bytes(list(page)), page.after

        # what every deploy script asks (`env-vars --all`, the Divio CLI): kept until the
        # store changes, as the JSON it is sent as; asked again, KeptAnswers sends it
        body, next_after = await remembered(variable_pages,
                                            page_key(ctx.principal, request.scope), compute)
        return Response(body, media_type="application/json",
                        headers=page_headers(request.url, next_after))

    @api.get(env_path + "/history", tags=["projects"])
    async def list_history(ctx: Ctx, request: Request, response: Response,
                           project: ProjectPath, env: EnvPath, prefix: PrefixQuery = None,
                           limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """The environment's audit trail, newest first (its services' state changes, its
        variables, its deploys; with `prefix`, one service's): a page of `limit`; the next
        page's URL is in the `Link` header (rel="next")."""
        return paged(request, response, await call(history.list_history, ctx, project, env,
                                                   prefix, PageArgs(limit, after)))

    @api.put(env_path + "/variables/{name}", tags=["variables"])
    async def set_variable(ctx: Ctx, project: ProjectPath, env: EnvPath, name: NamePath,
                           body: VariableIn) -> dict[str, Any]:
        return await call(variables.set_variable, ctx, project, env, name, body.value)

    @api.delete(env_path + "/variables/{name}", tags=["variables"])
    async def unset_variable(ctx: Ctx, project: ProjectPath, env: EnvPath,
                             name: NamePath) -> dict[str, Any]:
        return await call(variables.unset_variable, ctx, project, env, name)

    @api.get("/catalog", tags=["services"])
    async def catalog(ctx: Ctx, region: RegionQuery = None,
                      project: ProjectQuery = None) -> list[dict[str, Any]]:
        return await call(services.catalog_view, ctx, region, project)

    @api.get(env_path + "/services", tags=["services"])
    async def list_services(ctx: Ctx, request: Request, response: Response,
                            project: ProjectPath, env: EnvPath, removed: bool = False,
                            limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """The environment's services in the order they were added: a page of `limit`; the
        next page's URL is in the `Link` header (rel="next")."""
        return paged(request, response, await call(services.list_instances, ctx, project, env,
                                                   removed, PageArgs(limit, after)))

    async def added(ctx: Context, request: Request, project: str, env: str, body: ServiceIn,
                    wait: float) -> dict[str, Any]:
        return await queued_and_waited(
            ctx, request, wait,
            lambda c, brief: services.add(c, project, env, body.service, body.prefix,
                                          body.private, body.provision, brief),
            lambda op_id: services.after_operation(ctx, project, env, body.prefix, op_id))

    async def waited_add(caller: SignedIn, request: Request, project: str, env: str,
                         body: ServiceIn, wait: float) -> dict[str, Any]:
        """`add_service` as `tether.api.lane` calls it, for a caller it knows already."""
        return await added(base.as_principal(caller.principal), request, project, env, body,
                           wait)

    @api.post(env_path + "/services", status_code=201, tags=["services"])
    async def add_service(ctx: Ctx, request: Request, project: ProjectPath, env: EnvPath,
                          body: ServiceIn, wait: Wait = 0) -> dict[str, Any]:
        """Add a service (state `new`); with `provision`, provision it too, and with `wait`,
        answer once that has ended. (A waited add by a caller known already is answered in
        front of FastAPI, by the same function: `tether.api.lane`.)"""
        return await added(ctx, request, project, env, body, wait)

    @api.get(env_path + "/services/{prefix}", tags=["services"])
    async def show_service(ctx: Ctx, project: ProjectPath, env: EnvPath, prefix: PrefixPath,
                           reveal: bool = False) -> dict[str, Any]:
        return await call(services.show, ctx, project, env, prefix, reveal)

    @api.post(env_path + "/services/{prefix}/provision", tags=["services"])
    async def provision(ctx: Ctx, request: Request, project: ProjectPath, env: EnvPath,
                        prefix: PrefixPath, wait: Wait = 0) -> dict[str, Any]:
        """Provision a `new` service now; with `wait`, answer once that has ended."""
        return await queued_and_waited(
            ctx, request, wait, lambda c, brief: services.provision(c, project, env, prefix, brief),
            lambda op_id: services.after_operation(ctx, project, env, prefix, op_id))

    @api.post(env_path + "/services/{prefix}/detach", tags=["services"])
    async def detach(ctx: Ctx, project: ProjectPath, env: EnvPath,
                     prefix: PrefixPath) -> dict[str, Any]:
        return await call(services.detach, ctx, project, env, prefix)

    @api.post(env_path + "/services/{prefix}/attach", tags=["services"])
    async def attach(ctx: Ctx, project: ProjectPath, env: EnvPath,
                     prefix: PrefixPath) -> dict[str, Any]:
        return await call(services.attach, ctx, project, env, prefix)

    @api.post(env_path + "/services/{prefix}/rotate", tags=["services"])
    async def rotate(ctx: Ctx, project: ProjectPath, env: EnvPath,
                     prefix: PrefixPath) -> dict[str, Any]:
        """New credentials without downtime: a second login is made; when the running release
        uses the service, a deployment gives the application the new credentials (the
        operation's `deployment_id`), then the old ones are revoked (at once otherwise)."""
        return await call(services.rotate, ctx, project, env, prefix)

    @api.delete(env_path + "/services/{prefix}", tags=["services"])
    async def remove(ctx: Ctx, project: ProjectPath, env: EnvPath, prefix: PrefixPath,
                     confirm: ConfirmQuery = None) -> dict[str, Any]:
        return await call(services.remove, ctx, project, env, prefix, confirm)

    @api.post(env_path + "/backups", status_code=201, tags=["backups"])
    async def create_backup(ctx: Ctx, project: ProjectPath, env: EnvPath,
                            body: BackupIn) -> dict[str, Any]:
        """Back up the named services (none: every service with data) as one set, by an
        operation of the worker; with `verify`, then restore it into a scratch copy and compare.
        The set is listed (`restorable`) once every file is stored."""
        return await call(backups.create, ctx, project, env, body.prefixes, body.verify)

    @api.get(env_path + "/backup-schedule", tags=["backups"])
    async def show_schedule(ctx: Ctx, project: ProjectPath, env: EnvPath) -> dict[str, Any]:
        return await call(backups.show_schedule, ctx, project, env)

    @api.put(env_path + "/backup-schedule", tags=["backups"])
    async def set_schedule(ctx: Ctx, project: ProjectPath, env: EnvPath,
                           body: ScheduleIn) -> dict[str, Any]:
        """Back up every service with data every day at `at` (UTC), with retention."""
        return await call(backups.set_schedule, ctx, project, env, body.at, body.keep_daily,
                          body.keep_weekly, body.keep_monthly, body.verify_every_days)

    @api.delete(env_path + "/backup-schedule", tags=["backups"])
    async def remove_schedule(ctx: Ctx, project: ProjectPath, env: EnvPath) -> dict[str, Any]:
        return await call(backups.remove_schedule, ctx, project, env)

    @api.get("/projects/{project}/backups", tags=["backups"])
    async def list_backups(ctx: Ctx, request: Request, response: Response,
                           project: ProjectPath, env: EnvQuery = None, all: bool = False,
                           limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """Restorable backups, newest first; with `all`, the running and failed ones too. A
        page of `limit`; the next page's URL is in the `Link` header (rel="next")."""
        return paged(request, response, await call(backups.list_backups, ctx, project, env,
                                                   all, PageArgs(limit, after)))

    @api.get("/backups", tags=["backups"])
    async def list_every_backup(ctx: Ctx, request: Request, response: Response, all: bool = False,
                                limit: PageLimit = 100, after: Cursor = None
                                ) -> list[dict[str, Any]]:
        """Every project's restorable backups, newest first (admin tokens only: the operators'
        Backups page); with `all`, the running and failed ones too. A page of `limit`; the next
        page's URL is in the `Link` header (rel="next")."""
        return paged(request, response, await call(backups.list_every_backup, ctx, all,
                                                   PageArgs(limit, after)))

    @api.get("/backups/{backup_id}", tags=["backups"])
    async def show_backup(ctx: Ctx, backup_id: IdPath) -> dict[str, Any]:
        return await call(backups.show, ctx, backup_id)

    @api.delete("/backups/{backup_id}", tags=["backups"])
    async def delete_backup(ctx: Ctx, backup_id: IdPath) -> dict[str, Any]:
        """Forget a backup at once; its files are deleted by an operation."""
        return await call(backups.delete, ctx, backup_id)

    @api.post("/backups/{backup_id}/restore", tags=["backups"])
    async def restore_backup(ctx: Ctx, backup_id: IdPath, body: RestoreIn) -> dict[str, Any]:
        """Replace a service's data with the backup's: into the service of the same prefix in
        the backup's environment, or in `to`. `confirm` must repeat the prefix."""
        return await call(backups.restore, ctx, backup_id, body.to, body.prefix, body.confirm)

    @api.post("/backups/{backup_id}/verify", tags=["backups"])
    async def verify_backup(ctx: Ctx, backup_id: IdPath) -> dict[str, Any]:
        """Restore the backup into a scratch copy, compare with what was backed up, record the
        result, remove the scratch."""
        return await call(backups.verify, ctx, backup_id)

    @api.get("/backups/{backup_id}/download", tags=["backups"],
             response_class=StreamingResponse)
    async def download_backup(ctx: Ctx, backup_id: IdPath,
                              prefix: PrefixQuery = None) -> StreamingResponse:
        """The file of one service as it was dumped (e.g. a `pg_dump -Fc` archive), checked
        against its checksum before the first byte is sent. Needs the right to see secrets."""
        file_id, name, _ = await call(backups.download_file, ctx, backup_id, prefix)
        chunks = await call(lambda: transfer.plain_chunks(
            ctx.store, ctx.box, ctx.data_dir, file_id, f"download-{secrets.token_hex(8)}.tbk"))
        first = await call(next, chunks, b"")  # fetch and check before answering 200

        async def body() -> Any:
            if first:
                yield first
            async for chunk in iterate_in_threadpool(chunks):
                yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{name}"'})

    @api.post(env_path + "/services/{prefix}/copy", tags=["backups"])
    async def copy_service(ctx: Ctx, project: ProjectPath, env: EnvPath, prefix: PrefixPath,
                           body: CopyIn) -> dict[str, Any]:
        """Copy the data of the service of this prefix in `source` into this environment's
        (a backup of the source, restored here, in one operation). `confirm`: the prefix."""
        return await call(backups.copy, ctx, project, prefix, body.source, env, body.confirm)

    @api.put(env_path + "/services/{prefix}/upload", tags=["backups"])
    async def upload_dump(ctx: Ctx, request: Request, project: ProjectPath, env: EnvPath,
                          prefix: PrefixPath, confirm: ConfirmQuery = None) -> dict[str, Any]:
        """Restore a dump made elsewhere (the request body: e.g. a plain `pg_dump -Fc` file)
        into the service: checked and sealed as it streams in, kept as a backup (origin
        `upload`), restored by an operation. `confirm`: the prefix again."""
        engine = await call(backups.upload_engine, ctx, project, env, prefix, confirm)
        feed: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)

        def chunks() -> Iterator[bytes]:
            while (chunk := feed.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk  # the upload was cut short: nothing of it is kept
                yield chunk

        work = asyncio.get_running_loop().run_in_executor(
            None, lambda: backups.upload(ctx, project, env, prefix, chunks(), confirm))
        head, size, checked = b"", 0, False
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.MAX_UPLOAD:
                    raise UserError(f"the upload is larger than "
                                    f"{limits.human_size(limits.MAX_UPLOAD)}")
                if not checked:
                    head += chunk
                    if len(head) < 512 and chunk:
                        continue
                    engine.check_plain(head)
                    checked, chunk = True, head
                if chunk:
                    await run_in_threadpool(_put, feed, chunk, work)
            if not checked:
                engine.check_plain(head)
                await run_in_threadpool(_put, feed, head, work)
        except BaseException:
            await run_in_threadpool(_put, feed, UserError(
                "the upload was cut short: send the whole file again"), work)
            raise
        await run_in_threadpool(_put, feed, None, work)
        return await work

    @api.post(env_path + "/deployments", status_code=201, tags=["deployments"])
    async def deploy(ctx: Ctx, project: ProjectPath, env: EnvPath) -> dict[str, Any]:
        return await call(deployments.deploy, ctx, project, env)

    @api.get(env_path + "/deployments", tags=["deployments"])
    async def list_deployments(ctx: Ctx, request: Request, response: Response,
                               project: ProjectPath, env: EnvPath, limit: PageSize = 20,
                               after: Cursor = None) -> list[dict[str, Any]]:
        """The environment's deployments, newest first: a page of `limit`; the next page's URL
        is in the `Link` header (rel="next")."""
        return paged(request, response, await call(deployments.list_deployments, ctx, project,
                                                   env, PageArgs(limit, after)))

    @api.get(env_path + "/logs", tags=["deployments"])
    async def app_logs(ctx: Ctx, request: Request, project: ProjectPath, env: EnvPath,
                       lines: Annotated[int, Query(ge=0, le=deployments.MAX_LOG_LINES)] = 100,
                       after: Cursor = None,
                       wait: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        """The running release's output: the last `lines` lines, or with `after` (the `cursor`
        of a previous answer) the lines since; with `wait`, answer as soon as there are new
        lines (at most `wait` s): `tether logs --follow` long-polls this way."""
        return await long_poll(
            wait, lambda: call(deployments.app_logs, ctx, project, env, lines, after),
            lambda answer: after is None or bool(answer["lines"]) or answer["cursor"] != after,
            recheck=lambda: still_allowed(request))

    @api.get("/deployments/{deployment_id}", tags=["deployments"])
    async def get_deployment(ctx: Ctx, request: Request, deployment_id: IdPath,
                             logs_after: LogsAfter = 0,
                             wait: Annotated[float, Query(ge=0, le=60)] = 0,
                             status: Annotated[DeploymentStatus | None, Query()] = None,
                             percent: Annotated[int | None, Query(ge=0, le=100)] = None
                             ) -> dict[str, Any]:
        """The deployment and its log lines after `logs_after`. With `wait`, answer as soon as
        something is new (at most `wait` s): a log line, the end, or a status or percent other
        than `status`/`percent` (what the caller saw last; by default what the first look
        finds). `tether deploy` follows a deployment this way, one request per change."""
        def news(dep: dict[str, Any]) -> bool:
            nonlocal status, percent
            status = status or dep["status"]
            percent = dep["percent"] if percent is None else percent
            return bool(dep["logs"]) or dep["status"] in FINISHED or \
                dep["status"] != status or dep["percent"] != percent

        # the deploy runs on whichever node claimed it: its progress is in the store
        return await long_poll(
            wait, lambda: call(deployments.get_deployment, ctx, deployment_id, logs_after),
            news, recheck=lambda: still_allowed(request))

    @api.get("/deployments/{deployment_id}/release", tags=["deployments"])
    async def deployment_release(ctx: Ctx, deployment_id: IdPath) -> dict[str, Any]:
        """What the deployment's release had and changed: its variables' names (never their
        values), the services whose variables it has, those it attached and detached."""
        return await call(deployments.deployment_release, ctx, deployment_id)

    @api.get("/operations/{operation_id}", tags=["operations"])
    async def get_operation(ctx: Ctx, request: Request, operation_id: IdPath,
                            wait: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        """With `wait`, answer as soon as the operation has finished (at most `wait` s)."""
        return await operation_when_finished(ctx, request, operation_id, wait)

    async def operation_when_finished(ctx: Context, request: Request, operation_id: int,
                                      wait: float) -> dict[str, Any]:
        """The operation, once it has finished or `wait` s have passed."""
        seen = 0

        async def fetch() -> dict[str, Any]:
            nonlocal seen
            seen = worker.generation if worker is not None else 0
            return await call(deployments.get_operation, ctx, operation_id)

        async def pause(left: float) -> None:
            """Until this process's worker says the operation may have finished (its own end
            here, or any end on another node), holding no thread; else a short sleep."""
            if worker is not None:
                await worker.wait_for_operation(operation_id, seen, min(left, 1.0))
            else:
                await asyncio.sleep(min(left, 0.05))

        return await long_poll(wait, fetch, lambda op: op["status"] in FINISHED,
                               pause=pause, recheck=lambda: still_allowed(request))

    @api.get("/clusters", tags=["clusters"])
    async def list_clusters(ctx: Ctx, request: Request, response: Response,
                            limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """The clusters (never their credentials), each with `instances`: how many instances
        it holds; oldest first, a page of `limit`; the next page's URL is in the `Link`
        header (rel="next")."""
        return paged(request, response, await call(clusters.list_clusters, ctx,
                                                   PageArgs(limit, after)))

    @api.get("/clusters/{cluster_id}/health", tags=["clusters"])
    async def cluster_health(ctx: Ctx, cluster_id: IdPath) -> dict[str, Any]:
        """Whether Tether can administer the cluster now (admin only): `reachable`, the
        server's `version`, else the reason in `message`."""
        return await call(clusters.check_cluster, ctx, cluster_id)

    @api.post("/clusters", status_code=201, tags=["clusters"])
    async def add_cluster(ctx: Ctx, body: ClusterIn) -> dict[str, Any]:
        return await call(clusters.add_cluster, ctx, body.kind, body.region, body.url,
                          body.private, body.name, body.settings,
                          region_family=body.region_family)

    @api.get("/kinds", tags=["clusters"])
    async def list_kinds(ctx: Ctx) -> list[dict[str, Any]]:
        """The kinds of cluster Tether knows: service names, settings, variables, and why a
        kind is disabled here (its client library missing)."""
        return await call(clusters.list_kinds, ctx)

    @api.get("/regions", tags=["clusters"])
    async def list_regions(ctx: Ctx) -> list[dict[str, Any]]:
        return await call(clusters.list_regions, ctx)

    @api.get("/tokens", tags=["tokens"])
    async def list_tokens(ctx: Ctx, request: Request, response: Response, revoked: bool = False,
                          limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """Tokens (admin only), oldest first; with `revoked`, the revoked ones too. Never their
        secrets. A page of `limit`; the next page's URL is in the `Link` header."""
        return paged(request, response, await call(tokens.list_tokens, ctx, revoked,
                                                   PageArgs(limit, after)))

    @api.post("/tokens", status_code=201, tags=["tokens"])
    async def create_token(ctx: Ctx, request: Request, body: TokenIn) -> dict[str, Any]:
        """A new token (admin only). The answer's `token` is its secret, shown this once.
        Refused to a browser session: a stolen session must not mint a token that outlives its
        sign-out and its token's revocation."""
        if getattr(request.state, "session_id", None) is not None:
            raise Forbidden("tokens are made with a token (`tether token create`), not from a "
                            "browser session")
        return await call(tokens.create, ctx, body.name, body.role, body.projects,
                          body.expires_days, body.owner)

    @api.delete("/tokens/{name}", tags=["tokens"])
    async def revoke_token(ctx: Ctx, name: TokenNamePath) -> dict[str, Any]:
        """Revoke a token (admin only): refused from the next call on, its sessions ended."""
        return await call(tokens.revoke, ctx, name)

    throttle = SignInThrottle()

    @api.post("/sessions", status_code=201, tags=["tokens"],
              responses={429: _error_doc("too many failed sign-ins from this address: wait "
                                         "for the number of seconds in Retry-After")})
    async def sign_in(request: Request, body: SessionIn) -> dict[str, Any]:
        """Sign a browser in: trade a token for a session (`session`, its secret, shown once),
        sent as `Authorization: Bearer SESSION` from then on. Needs no other authentication;
        repeated failures from one address are slowed down (429 with Retry-After)."""
        address = request.client.host if request.client else "?"
        wait = throttle.wait_left(address)
        if wait > 0:
            raise TooManyAttempts(f"too many failed sign-ins from this address: try again in "
                                  f"{int(wait) + 1} s", int(wait) + 1)
        agent = request.headers.get("user-agent", "")[:150]
        try:
            made = await run_in_threadpool(create_session, base.store, body.token,
                                           f"{address} {agent}".strip())
        except Unauthorized:
            throttle.failed(address)
            raise
        throttle.succeeded(address)
        return {"id": made.id, "session": made.secret, "expires_at": made.expires_at.isoformat()}

    @api.get("/sessions", tags=["tokens"])
    async def list_sessions(ctx: Ctx, request: Request, response: Response,
                            limit: PageLimit = 100, after: Cursor = None) -> list[dict[str, Any]]:
        """Live browser sessions of your token (an admin sees everyone's), oldest first;
        `current` marks the one asking. A page of `limit`; the next page's URL is in the
        `Link` header (rel="next")."""
        return paged(request, response, await call(
            tokens.list_sessions, ctx, getattr(request.state, "session_id", None),
            PageArgs(limit, after)))

    @api.delete("/sessions/{session_id}", tags=["tokens"])
    async def revoke_session(ctx: Ctx, session_id: IdPath) -> dict[str, Any]:
        """End a browser session at once."""
        return await call(tokens.revoke_session, ctx, session_id)

    app.include_router(api)
    app.include_router(divio_router(base))  # the Divio CLI's subset of Divio's API

    docs_page = _docs_page()

    @app.get("/api/v1/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return docs_page

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="docs-assets")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(web_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _put(feed: queue.Queue[bytes | BaseException | None], item: bytes | BaseException | None,
         work: asyncio.Future[Any]) -> None:
    """Hand an upload's next piece to its sealing thread, unless that thread has ended (it
    failed: its error is the answer). An exception fails the thread, which then removes its
    partial file: a stream cut short is never taken for a whole dump."""
    while not work.done():
        with contextlib.suppress(queue.Full):
            feed.put(item, timeout=0.5)
            return


#: where the API docs page's Swagger UI files are served from (the `swagger-ui-bundle` wheel)
DOCS_ASSETS = "/api/v1/docs-assets"


def _docs_page() -> HTMLResponse:
    """The API docs page (Swagger UI) with every file served by Tether itself: FastAPI's default
    page loads its script from a public CDN, so whoever controls that CDN (or the network on the
    way) would run script in the control plane's origin. The page's one inline script is allowed
    by its hash, nothing else."""
    page = get_swagger_ui_html(
        openapi_url="/api/v1/openapi.json", title="Tether API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")
    body = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", body, re.S))
    return HTMLResponse(body, headers={
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
    })
