"""The local process runtime with real processes: health checks, failed starts, the stable
address switching with zero failed requests, draining, clean shutdown; the app's output in a
private, rotated, redacted log file; a release that outlives its runtime, adopted by the next."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tether.errors import OperationError, UserError
from tether.net import free_port
from tether.runtime import logs
from tether.runtime.process import (
    ProcessRuntime,
    ReleaseFailed,
    ReleaseSpec,
    RunningRelease,
    kill_process_group,
    process_start_token,
)

pytestmark = pytest.mark.integration

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "app.py"

# A tiny app: "/" names its VERSION, "/slow" takes a second, "/health" answers HEALTH (200).
TINY_APP = textwrap.dedent(
    """
    import os, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                code, text = int(os.environ.get("HEALTH", "200")), "health"
            elif self.path.startswith("/say/"):
                print(self.path[len("/say/"):], flush=True)
                code, text = 200, "said"
            elif self.path == "/slow":
                time.sleep(1)
                code, text = 200, "slow " + os.environ["VERSION"]
            else:
                code, text = 200, "version " + os.environ["VERSION"]
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            sent = self.rfile.read(int(self.headers["Content-Length"])).decode()
            forwarded = self.headers["X-Forwarded-For"]
            body = f"{self.command} {self.path} {sent} {forwarded}".encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-App", "tiny")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    if os.environ.get("EXIT_AT_START"):
        print("starting version", os.environ["VERSION"])
        print("boom: missing configuration", file=sys.stderr)
        sys.exit(int(os.environ["EXIT_AT_START"]))
    for n in range(int(os.environ.get("PRINT_LINES", "0"))):
        print(f"line {n:05d} token={os.environ.get('TOKEN', '-')} " + "x" * 60)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
    server.daemon_threads = True
    server.request_queue_size = 64
    print("tiny app", os.environ["VERSION"], "on", os.environ["PORT"], flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def runtime() -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime()
    try:
        yield rt
    finally:
        rt.shutdown()


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_APP)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def tiny_spec(command: str, release_id: int, key: str = "shop/test", **env: str) -> ReleaseSpec:
    return ReleaseSpec(
        release_id=release_id,
        environment_key=key,
        command=command,
        env={"VERSION": str(release_id), **env},
        health_path="/health",
        health_timeout=10,
    )


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie awaiting its reaper has ended: it counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z"


def gone(pgid: int) -> bool:
    """True once no live process of the group `pgid` is left (Linux: reads /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


class Poller:
    """Polls the stable address continuously from a thread, recording every answer."""

    def __init__(self, url: str, path: str = "/", host: str | None = None) -> None:
        self.url, self.path = url, path
        #: a Host header to send (the front door routes by it)
        self.headers = {"Host": host} if host else {}
        self.answers: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False,
                          headers=self.headers) as client:
            while not self._stop.is_set() and len(self.answers) < 3000:
                if time.monotonic() > deadline:
                    break
                try:
                    r = client.get(self.path)
                    self.answers.append((r.status_code, r.text))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.answers) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def test_hello_app_serves_at_the_stable_address(runtime: ProcessRuntime) -> None:
    lines: list[str] = []
    url = runtime.ensure_address("shop/test", free_port())
    assert runtime.ensure_address("shop/test", int(url.rsplit(":", 1)[1])) == url  # idempotent

    answer = httpx.get(url + "/", trust_env=False)
    assert answer.status_code == 503
    assert "no release of shop/test is running yet: deploy it" in answer.text

    spec = ReleaseSpec(
        release_id=1,
        environment_key="shop/test",
        command=f"{shlex.quote(sys.executable)} {shlex.quote(str(HELLO))}",
        env={"STAGE": "test", "REQUIRED_VARIABLES": "STAGE"},
        health_path="/health",
        log=lines.extend,
    )
    release = runtime.start(spec)
    assert release.pid > 0 and release.port > 0
    assert runtime.current("shop/test") is None  # healthy, but no traffic before the switch
    assert runtime.switch("shop/test", release) is None
    assert runtime.current("shop/test") is release

    status = httpx.get(url + "/status.json", trust_env=False)
    assert status.status_code == 200
    assert status.json() == {"stage": "test", "services": {}}
    assert f"hello app listening on {release.port}, stage test" in lines
    page = httpx.get(url + "/?x=1", trust_env=False)
    assert page.status_code == 200 and "stage: <b>test</b>" in page.text


def test_port_taken_by_another_program_is_a_user_error(runtime: ProcessRuntime) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(UserError, match="taken"):
            runtime.ensure_address("shop/test", other.getsockname()[1])


def test_failed_starts_keep_the_previous_release_serving(
    runtime: ProcessRuntime, tiny: str
) -> None:
    url = runtime.ensure_address("shop/test", free_port())
    first = runtime.start(tiny_spec(tiny, 1))
    runtime.switch("shop/test", first)

    lines: list[str] = []
    crashing = tiny_spec(tiny, 2, EXIT_AT_START="3")
    crashing.log = lines.extend
    with pytest.raises(ReleaseFailed, match="exited with code 3 before becoming healthy"):
        runtime.start(crashing)
    assert "starting version 2" in lines
    assert "boom: missing configuration" in lines

    sick = tiny_spec(tiny, 3, HEALTH="500")
    sick.health_timeout = 1.0
    started = time.monotonic()
    with pytest.raises(ReleaseFailed, match=r"not healthy after 1 s: GET /health answered 500"):
        runtime.start(sick)
    assert time.monotonic() - started < 5

    silent = ReleaseSpec(4, "shop/test", "sleep 30", {}, health_timeout=0.5)
    with pytest.raises(ReleaseFailed, match="nothing listens on port"):
        runtime.start(silent)

    assert runtime.current("shop/test") is first
    assert httpx.get(url, trust_env=False).text == "version 1"


def test_proxy_forwards_method_path_body_and_headers(runtime: ProcessRuntime, tiny: str) -> None:
    url = runtime.ensure_address("shop/test", free_port())
    runtime.switch("shop/test", runtime.start(tiny_spec(tiny, 1)))
    answer = httpx.post(url + "/echo/a%2Fb?q=%20x&r=1", content=b"hello", trust_env=False)
    assert answer.status_code == 201
    assert answer.headers["x-app"] == "tiny"
    assert answer.text == "POST /echo/a%2Fb?q=%20x&r=1 hello 127.0.0.1"


def test_zero_failed_requests_during_switch_and_failed_deploys(
    runtime: ProcessRuntime, tiny: str
) -> None:
    url = runtime.ensure_address("shop/live", free_port())
    old = runtime.start(tiny_spec(tiny, 1, key="shop/live"))
    runtime.switch("shop/live", old)

    pollers = [Poller(url) for _ in range(3)]  # three clients at once, each one in order
    with contextlib.ExitStack() as stack:
        for poller in pollers:
            stack.enter_context(poller)
            poller.wait_for(20)
        new = runtime.start(tiny_spec(tiny, 2, key="shop/live"))
        previous = runtime.switch("shop/live", new)
        assert previous is old
        switched_at = [len(poller.answers) for poller in pollers]
        runtime.stop(old)
        assert gone(old.pid)
        for poller in pollers:
            poller.wait_for(len(poller.answers) + 20)

        with pytest.raises(ReleaseFailed):
            runtime.start(tiny_spec(tiny, 3, key="shop/live", EXIT_AT_START="1"))
        with pytest.raises(ReleaseFailed):
            sick = tiny_spec(tiny, 4, key="shop/live", HEALTH="503")
            sick.health_timeout = 0.5
            runtime.start(sick)
        for poller in pollers:
            poller.wait_for(len(poller.answers) + 20)

    for poller, switched in zip(pollers, switched_at, strict=True):
        assert poller.errors == []
        assert len(poller.answers) >= 60
        assert {code for code, _ in poller.answers} == {200}
        bodies = [text for _, text in poller.answers]
        assert set(bodies) == {"version 1", "version 2"}
        first_new = bodies.index("version 2")
        # the request in flight at the switch may still be answered by the old release; the
        # next ones all reach the new release, and never the old one again
        assert first_new <= switched + 1
        assert "version 1" not in bodies[first_new:]


def test_stop_drains_a_request_in_flight(runtime: ProcessRuntime, tiny: str) -> None:
    url = runtime.ensure_address("shop/test", free_port())
    old = runtime.start(tiny_spec(tiny, 1))
    runtime.switch("shop/test", old)

    new = runtime.start(tiny_spec(tiny, 2))  # ready before the slow request starts
    result: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: result.update(r=httpx.get(url + "/slow", timeout=10, trust_env=False))
    )
    slow.start()
    # wait until the proxy has the slow request in flight at the old release (a fixed sleep was
    # too short on a loaded machine: the request had not arrived when the stop began)
    deadline = time.monotonic() + 5
    while old._in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert old._in_flight == 1

    runtime.switch("shop/test", new)
    started = time.monotonic()
    runtime.stop(old)
    assert time.monotonic() - started >= 0.4  # it waited for the request
    slow.join(timeout=10)
    assert result["r"].status_code == 200
    assert result["r"].text == "slow 1"
    assert gone(old.pid)
    runtime.stop(old)  # idempotent
    assert httpx.get(url, trust_env=False).text == "version 2"


def test_current_release_dying_answers_502(runtime: ProcessRuntime, tiny: str) -> None:
    url = runtime.ensure_address("shop/test", free_port())
    release = runtime.start(tiny_spec(tiny, 7))
    runtime.switch("shop/test", release)
    os.killpg(release.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while release.running and time.monotonic() < deadline:
        time.sleep(0.02)
    answer = httpx.get(url, trust_env=False)
    assert answer.status_code == 502
    assert "release 7 of shop/test is not running" in answer.text
    assert "SIGKILL" in answer.text


def test_shutdown_leaves_no_process_behind(tmp_path: Path, tiny: str) -> None:
    runtime = ProcessRuntime()
    try:
        url = runtime.ensure_address("shop/test", free_port())
        # A command with a background child: the whole process group must go.
        pidfile = tmp_path / "child.pid"
        family = ReleaseSpec(
            1,
            "shop/test",
            f"sleep 60 & echo $! > {shlex.quote(str(pidfile))}; exec {tiny}",
            {"VERSION": "1"},
            health_path="/health",
        )
        current = runtime.start(family)
        runtime.switch("shop/test", current)
        spare = runtime.start(tiny_spec(tiny, 2))  # started, never switched to
        assert httpx.get(url, trust_env=False).text == "version 1"
        child = int(pidfile.read_text())
    finally:
        runtime.shutdown()
    releases: list[RunningRelease] = [current, spare]
    assert all(gone(r.pid) for r in releases)
    assert not alive(child)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, trust_env=False)
    # nor the log files of its releases: the temp dir it made for them (no log_dir given)
    assert current.log_path is not None and not current.log_path.exists()
    made = current.log_path.parents[3]
    assert made.name.startswith("tether-app-logs-") and not made.exists()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_output_goes_to_a_private_rotated_log_file_with_secrets_masked(
    runtime: ProcessRuntime, tiny: str, tmp_path: Path
) -> None:
    path = logs.release_log_path(tmp_path / "data", "shop/test", 1)
    assert path == tmp_path / "data" / "logs" / "shop" / "test" / "release-1.log"
    token = "s3cr3t-t0ken-value"
    spec = tiny_spec(tiny, 1, PRINT_LINES="3000", TOKEN=token)
    spec.log_path, spec.log_max_bytes, spec.log_backups = path, 40_000, 2
    spec.secrets = [token]
    started: list[str] = []
    spec.log = started.extend
    release = runtime.start(spec)
    assert release.log_path == path
    # the lines printed while starting reached the deployment log's sink, masked
    assert started and all(token not in line for line in started)
    # the app printed ~300 kB while nobody read its output after the start: all drained,
    # rotated at 40 kB, two rotated files kept
    wait_until(lambda: logs.tail_text(path, 1) == [f"tiny app 1 on {release.port}"])
    files = logs.log_files(path)
    assert [f.name for f in files] == ["release-1.log.2", "release-1.log.1", "release-1.log"]
    for f in files:
        assert f.stat().st_size <= 40_000
        assert oct(f.stat().st_mode & 0o777) == "0o600"
        text = f.read_text()
        assert token not in text and "token=*** " in text
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert not (path.parent / "release-1.log.3").exists()

    tail = logs.read_tail(path, 6)
    assert [e.line.split()[1] for e in tail.lines[:5]] == [f"{n:05d}" for n in range(2995, 3000)]
    assert all(e.at and e.at.endswith("Z") for e in tail.lines)
    # a reader following the output keeps its place across a rotation
    runtime.switch("shop/test", release)
    url = runtime.ensure_address("shop/test", free_port())
    position = tail.position
    assert httpx.get(url + "/say/after-the-tail", trust_env=False).text == "said"
    wait_until(lambda: bool(logs.read_after(path, position).lines))
    chunk = logs.read_after(path, position)
    assert [e.line for e in chunk.lines] == ["after-the-tail"] and not chunk.missed
    # lines rotated away before they were read are reported as missed
    oldest = logs.read_after(path, None, limit=1)
    assert oldest.position is not None
    for n in range(40):
        httpx.get(url + f"/say/{n:03d}-{'y' * 1500}", trust_env=False)
    wait_until(lambda: any("039-" in line for line in logs.tail_text(path, 1)))
    assert logs.read_after(path, oldest.position).missed


def test_output_is_drained_while_nobody_reads_it(runtime: ProcessRuntime, tmp_path: Path) -> None:
    """An app printing far more than a pipe holds is never blocked by its output."""
    app = tmp_path / "chatty.py"
    app.write_text(textwrap.dedent(
        """
        import os, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer
        for n in range(20000):
            print("chatter", n, "z" * 100)
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            def log_message(self, *args):
                pass
        HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
        """))
    spec = ReleaseSpec(1, "shop/test", f"{shlex.quote(sys.executable)} {shlex.quote(str(app))}",
                       {}, health_timeout=20, log_path=tmp_path / "chatty.log")
    release = runtime.start(spec)  # healthy only once all 2 MB were printed
    wait_until(lambda: logs.tail_text(release.log_path, 1) == ["chatter 19999 " + "z" * 100])


def test_a_release_outlives_its_runtime_and_is_adopted_by_the_next(
    tiny: str, tmp_path: Path
) -> None:
    port = free_port()
    first = ProcessRuntime()
    first.ensure_address("shop/test", port)
    spec = tiny_spec(tiny, 5)
    spec.log_path = tmp_path / "release-5.log"
    release = first.start(spec)
    first.switch("shop/test", release)
    assert first.abandon() == [release]  # as a crash: the address goes, the app stays
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
    assert alive(release.pid) and release.pid_start == process_start_token(release.pid)

    second = ProcessRuntime()
    try:
        url = second.ensure_address("shop/test", port)
        adopted = second.adopt(5, "shop/test", release.pid, release.pid_start, release.port,
                               spec.log_path)
        assert adopted is not None and adopted.adopted and adopted.running
        second.switch("shop/test", adopted)
        assert httpx.get(url, trust_env=False).text == "version 5"
        # its output still reaches its log file, with nobody from the first runtime left
        assert httpx.get(url + "/say/still-logging", trust_env=False).text == "said"
        wait_until(lambda: logs.tail_text(spec.log_path, 1) == ["still-logging"])
        second.stop(adopted)
        assert gone(release.pid)
        assert adopted.exit_reason() == "it was stopped"
    finally:
        second.shutdown()


def test_a_pid_that_is_not_the_release_is_neither_adopted_nor_killed(
    runtime: ProcessRuntime,
) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        token = process_start_token(other.pid)
        assert token is not None
        wrong = str(int(token) + 1)  # the same pid, started at another time: another process
        assert runtime.adopt(1, "shop/test", other.pid, wrong, free_port(), None) is None
        assert not kill_process_group(other.pid, wrong, grace=0.1)
        assert runtime.releases() == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert process_start_token(other.pid) is None  # ended: nothing to adopt


def test_nothing_starts_once_the_runtime_is_shut_down(tiny: str) -> None:
    runtime = ProcessRuntime()
    runtime.shutdown()
    with pytest.raises(ReleaseFailed, match="stopping"):
        runtime.start(tiny_spec(tiny, 1))


# -- review findings: the order of a start, forced stops, log masking and reading -------------


def processes_with(marker: str) -> list[int]:
    """The live processes with `marker` in their command line (Linux: reads /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def test_on_start_records_the_release_before_its_app_exists(
    runtime: ProcessRuntime, tiny: str, unique_id: str
) -> None:
    """A crash of Tether between the start of an app and the record of its pid left an app
    nobody knew of: `on_start` now runs before the app exists, and if it fails (the store is
    down, Tether is killed) no app is started at all."""
    marker = f"marker-{unique_id}"
    seen: list[tuple[int, str, list[int]]] = []

    def record(release: RunningRelease) -> None:
        seen.append((release.pid, release.pid_start, processes_with(marker)))

    spec = tiny_spec(f"{tiny} {marker}", 1)
    spec.on_start = record
    release = runtime.start(spec)
    ((pid, token, apps_then),) = seen
    assert (pid, token) == (release.pid, release.pid_start) == \
        (release.pid, process_start_token(release.pid))
    assert apps_then == []  # recorded before the app was started
    assert all(os.getpgid(app) == release.pid for app in processes_with(marker))
    runtime.stop(release, drain_timeout=0)

    failing_marker = f"failing-{unique_id}"
    writers: list[RunningRelease] = []

    def broken(release: RunningRelease) -> None:
        writers.append(release)
        time.sleep(0.3)  # the writer is up and waits for its settings
        raise RuntimeError("the store is down")

    spec = tiny_spec(f"{tiny} {failing_marker}", 2)
    spec.on_start = broken
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="store is down"):
        runtime.start(spec)
    assert time.monotonic() - began < 3  # no SIGTERM grace for a writer that runs no app
    (writer,) = writers
    assert gone(writer.pid) and writer.exit_reason() == "it was stopped"
    time.sleep(0.5)  # an app started by mistake would show by now
    assert processes_with(failing_marker) == []
    assert runtime.releases() == []


def test_the_writer_starts_no_app_without_valid_settings(tmp_path: Path) -> None:
    """The writer of a start called off gets EOF on its stdin instead of settings: it must exit
    at once with an error, starting nothing."""
    flag = tmp_path / "app-ran"
    bad_settings = [
        b"",
        b"not json",
        b"[]",
        json.dumps({"command": f"touch {flag}", "log_path": str(tmp_path / "x.log"),
                    "max_bytes": 1000, "backups": 1}).encode(),  # no env
    ]
    for settings in bad_settings:
        done = subprocess.run([sys.executable, "-m", "tether.runtime.logs"], input=settings,
                              capture_output=True, timeout=30)
        assert done.returncode == 2, done
        assert done.stdout.startswith(b"error the log writer got no valid settings"), done
        assert b"Traceback" not in done.stdout + done.stderr
    assert not flag.exists()


def test_a_start_called_off_by_shutdown_leaves_no_writer_nor_pipe(
    tiny: str, unique_id: str
) -> None:
    """A spawn racing `shutdown` (here: shutdown while the release is recorded) ends its
    writer at once and closes its pipes, instead of a 5 s SIGTERM wait the writer ignores."""
    runtime = ProcessRuntime()
    marker = f"marker-{unique_id}"
    writers: list[RunningRelease] = []

    def record_then_shutdown(release: RunningRelease) -> None:
        writers.append(release)
        time.sleep(0.3)  # the writer is up, ignores SIGTERM, and waits for its settings
        runtime.shutdown()

    spec = tiny_spec(f"{tiny} {marker}", 1)
    spec.on_start = record_then_shutdown
    began = time.monotonic()
    with pytest.raises(ReleaseFailed, match="stopping"):
        runtime.start(spec)
    assert time.monotonic() - began < 3
    (writer,) = writers
    process = writer._process
    assert process is not None and process.returncode is not None
    assert process.stdin is not None and process.stdin.closed
    assert process.stdout is not None and process.stdout.closed
    assert gone(writer.pid) and processes_with(marker) == []


def test_kill_all_ends_apps_that_ignore_sigterm_at_once(tiny: str, tmp_path: Path) -> None:
    """The forced stop of `tether up`: SIGKILL to every release, started or adopted, with no
    drain and no grace (`shutdown` would take 2 s + 5 s per app that ignores SIGTERM)."""
    stubborn = f"trap '' TERM; exec {tiny}"
    first = ProcessRuntime()
    spec = tiny_spec(stubborn, 1)
    spec.log_path = tmp_path / "release-1.log"
    left = first.start(spec)
    (released,) = first.abandon()
    assert released is left

    runtime = ProcessRuntime()
    try:
        adopted = runtime.adopt(1, "shop/test", left.pid, left.pid_start, left.port,
                                spec.log_path)
        assert adopted is not None
        url = runtime.ensure_address("shop/other", free_port())
        started = runtime.start(tiny_spec(stubborn, 2, key="shop/other"))
        runtime.switch("shop/other", started)
        assert httpx.get(url, trust_env=False).text == "version 2"
        os.killpg(started.pid, signal.SIGTERM)  # ignored: the app goes on serving
        time.sleep(0.3)
        assert httpx.get(url, trust_env=False).text == "version 2"

        began = time.monotonic()
        assert sorted(runtime.kill_all()) == [1, 2]
        assert time.monotonic() - began < 1.5
        wait_until(lambda: gone(started.pid) and gone(left.pid), timeout=0.5)
        assert runtime.closed and runtime.releases() == []
        assert started.exit_reason() == "it was stopped"
        with pytest.raises(ReleaseFailed, match="stopping"):
            runtime.start(tiny_spec(tiny, 3))
    finally:
        runtime.shutdown()
        for release in (left, started):
            with contextlib.suppress(OSError):
                os.killpg(release.pid, signal.SIGKILL)


def test_a_secret_across_the_cut_of_a_long_line_is_masked(tmp_path: Path) -> None:
    """Lines longer than MAX_LINE are cut into pieces, each masked on its own: a cut inside a
    secret wrote its two halves in clear. Lines complete at once, lines still coming, and a
    secret whose end comes in a later write."""
    secret = "S3cr3t-Val-012345"
    cut = logs.MAX_LINE
    app = tmp_path / "long.py"
    app.write_text(textwrap.dedent(
        f"""
        import sys, time
        secret, cut = {secret!r}, {cut}
        def out(text):
            sys.stdout.write(text)
            sys.stdout.flush()
            time.sleep(0.3)
        out("a" * (cut - 5) + secret + " end1\\n")
        out("b" * (cut - 7) + secret + "c" * 100)
        out(" end2\\n")
        out("d" * (cut - 9))
        out(secret[:10])  # small writes: read each on its own
        out(secret[10:] + " end3\\n")
        """))
    path = tmp_path / "release.log"
    settings = {"command": f"{shlex.quote(sys.executable)} {shlex.quote(str(app))}",
                "cwd": None, "env": {"PATH": os.defpath}, "log_path": str(path),
                "max_bytes": 10 * cut, "backups": 1, "secrets": [secret]}
    done = subprocess.run([sys.executable, "-m", "tether.runtime.logs"],
                          input=json.dumps(settings).encode(), capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith(b"started "), done
    text = path.read_text()
    assert secret[:5] not in text and secret[5:] not in text
    assert secret[:10] not in text and secret[10:] not in text
    assert text.count("***") == 3
    pieces = [line.partition(" ")[2] for line in text.splitlines()]
    assert all(len(piece) <= cut for piece in pieces)
    assert "".join(pieces) == ("a" * (cut - 5) + "*** end1" + "b" * (cut - 7) + "***"
                               + "c" * 100 + " end2" + "d" * (cut - 9) + "*** end3")


def test_a_log_position_is_never_negative() -> None:
    """A crafted cursor with a negative offset made `f.seek(-n)` raise (HTTP 500): every
    token `Position.token` cannot have made is refused (ValueError: a bad cursor)."""
    assert logs.Position.parse("12.34.56") == logs.Position(12, 34, 56)
    assert logs.Position.parse("0.0.0") is None
    for token in ("12.34.-56", "12.-34.56", "-12.34.56", "12.34", "12.34.56.78", "a.b.c",
                  "", "12.34. 56", "12.34.+5", "12.34.\uff15"):
        with pytest.raises(ValueError):
            logs.Position.parse(token)
    with pytest.raises(ValueError):
        logs.Position(12, 34, -1)


def test_an_unreadable_log_is_an_operation_error(tmp_path: Path) -> None:
    """An OSError while reading a log is an error with a message (an `OperationError`, so the
    API answers it as one), still an OSError for callers that skip unreadable logs."""
    path = tmp_path / "release-1.log"
    path.mkdir()  # not a file: open() fails
    for read in (lambda: logs.read_tail(path, 5), lambda: logs.read_after(path, None)):
        with pytest.raises(logs.LogUnreadable, match="could not be read") as caught:
            read()
        assert isinstance(caught.value, OperationError) and isinstance(caught.value, OSError)
        assert str(path) in caught.value.message
    assert logs.tail_text(path, 5) == []


NO_PROC_START = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tether.runtime.process import ProcessRuntime, ReleaseFailed, ReleaseSpec

    runtime = ProcessRuntime()
    recorded = []
    spec = ReleaseSpec(1, "shop/test", sys.argv[1], {"VERSION": "1"}, health_path="/health",
                       health_timeout=10, log_path=Path(sys.argv[2]), on_start=recorded.append)
    try:
        runtime.start(spec)
    except ReleaseFailed as exc:
        print("refused:", exc, "| recorded:", len(recorded), flush=True)
    else:
        print("started | recorded:", len(recorded), flush=True)
    runtime.shutdown()
    """
)


def test_a_release_whose_start_time_cannot_be_read_is_not_started(
    tiny: str, tmp_path: Path, unique_id: str
) -> None:
    """Without the writer's start time (/proc unreadable) a release was recorded with an empty
    one: never adopted nor stopped after a crash. The start is refused instead, before any app
    exists. /proc is really hidden: a runtime in a mount namespace with an empty /proc."""
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare (user and mount namespaces) to hide /proc")
    marker = f"marker-{unique_id}"
    script = tmp_path / "start.py"
    script.write_text(NO_PROC_START)
    inner = (f"mount -t tmpfs tmpfs /proc && exec {shlex.quote(sys.executable)} "
             f"{shlex.quote(str(script))} {shlex.quote(f'{tiny} {marker}')} "
             f"{shlex.quote(str(tmp_path / 'release-1.log'))}")
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", inner], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done
    assert done.stdout.startswith("refused: could not read the start time"), done
    assert done.stdout.rstrip().endswith("| recorded: 0"), done
    assert processes_with(marker) == []
