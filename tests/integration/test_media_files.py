"""The media origin never serves a file outside the media directory, not even while an application
swaps its files for symlinks (issue 8, review finding on the media server).

The media server runs as root (inside `tether up`) and each instance's directory belongs to its
application's user (tether.runtime.isolation). Starlette's StaticFiles checked the resolved path,
then opened the path again: an application that swapped a file for a symlink to the secret key in
between got the key served (in 5 to 10% of the requests of the race test below). The media
files are now opened one component at a time with O_NOFOLLOW and served from that descriptor.

The tests run the real media app (`create_media_app`) behind a real uvicorn listener, as
`tether up` serves it; the swapping application is a process of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tether.media import create_media_app

pytestmark = pytest.mark.integration

#: the application: swaps `a.txt` for a symlink to the secret file and back, and the directory
#: `d` for a symlink to the secret's directory and back, as fast as it can, until killed
SWAPPER = r"""
import os, sys
inst, secret = sys.argv[1], sys.argv[2]
harmless = "x" * os.path.getsize(secret)  # as long: a leak is a complete, valid answer
os.chdir(inst)
os.symlink(os.path.dirname(secret), ".dlink")
while True:
    with open(".real", "w") as f:
        f.write(harmless)
    os.replace(".real", "a.txt")
    os.symlink(secret, ".link")
    os.replace(".link", "a.txt")
    os.rename("d", ".dir")
    os.rename(".dlink", "d")
    os.rename("d", ".dlink")
    os.rename(".dir", "d")
"""
REQUESTS = 2000


@pytest.fixture
def media(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The media app of a media directory with one instance directory, on a listener of its
    own: its base URL, the instance's directory and a secret file outside the media directory
    (as DATA_DIR/secret.key is)."""
    secret_dir = tmp_path / "data"
    secret_dir.mkdir()
    secret = secret_dir / "secret.key"
    secret.write_text(secrets.token_hex(22))
    instance = tmp_path / "data" / "media" / "tether_i1"
    instance.mkdir(parents=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_media_app(instance.parent), lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the media app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", instance, secret
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def swapping(instance: Path, secret: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The swapping application, running until the block ends."""
    harmless = "x" * secret.stat().st_size
    (instance / "a.txt").write_text(harmless)
    (instance / "d").mkdir()
    (instance / "d" / secret.name).write_text(harmless)
    proc = subprocess.Popen([sys.executable, "-c", SWAPPER, str(instance), str(secret)],
                            stderr=subprocess.PIPE)
    try:
        time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()
        yield proc
        assert proc.poll() is None, proc.communicate()[1].decode()
    finally:
        proc.kill()
        proc.wait()


def test_a_file_swapped_for_a_symlink_while_served_never_serves_the_target(
        media: tuple[str, Path, Path]) -> None:
    url, instance, secret = media
    key = secret.read_bytes()
    name = instance.name
    leaked: list[str] = []
    answers: dict[int, int] = {}
    with swapping(instance, secret), httpx.Client(timeout=10) as client:
        for i in range(REQUESTS):
            path = f"/{name}/a.txt" if i % 2 else f"/{name}/d/{secret.name}"
            try:
                answer = client.get(url + path)
            except httpx.TransportError:  # the old code: a file gone after its check, mid-answer
                answers[0] = answers.get(0, 0) + 1
                continue
            answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
            if key in answer.content:
                leaked.append(path)
    assert not leaked, (f"the secret was served for {len(leaked)} of {REQUESTS} requests: "
                        f"{sorted(set(leaked))}")
    assert 0 not in answers, f"answers broken off: {answers}"
    # the race was run: the harmless files were served, and the links refused, many times
    assert answers.get(200, 0) > REQUESTS / 10 and answers.get(404, 0) > REQUESTS / 10, answers


def test_symlinks_fifos_and_directories_are_not_served(media: tuple[str, Path, Path]) -> None:
    url, instance, secret = media
    name = instance.name
    key = secret.read_bytes()
    (instance / "ok.txt").write_text("fine")
    (instance / "sub").mkdir()
    (instance / "sub" / "deep.txt").write_text("deep")
    (instance / "key-link").symlink_to(secret)  # a link out
    (instance / "inner-link.txt").symlink_to(instance / "ok.txt")  # a link inside: not followed
    (instance / "out-dir").symlink_to(secret.parent)  # a link out, as a directory component
    (instance / "in-dir").symlink_to(instance / "sub")  # a link inside, as a directory component
    os.mkfifo(instance / "pipe.txt")  # opening it for reading would wait for a writer
    os.link(secret, instance / "hard.txt")  # another name of the secret (as root: allowed)
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{url}/{name}/ok.txt").text == "fine"
        assert client.get(f"{url}/{name}/sub/deep.txt").text == "deep"
        for path in ("key-link", "inner-link.txt", f"out-dir/{secret.name}", "in-dir/deep.txt",
                     "pipe.txt", "hard.txt", "sub", "ok.txt/x", "missing"):
            started = time.monotonic()
            answer = client.get(f"{url}/{name}/{path}")
            assert answer.status_code == 404, (path, answer.status_code)
            assert key not in answer.content and b"fine" not in answer.content, path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert time.monotonic() - started < 5, path
        # the server is still answering (the FIFO blocked no worker)
        assert client.get(f"{url}/{name}/ok.txt").text == "fine"


def test_files_are_served_as_before(media: tuple[str, Path, Path]) -> None:
    """What StaticFiles answered, the descriptor-based answer keeps: length, type, validators
    (304), HEAD, ranges, 405 for writes, the media headers."""
    url, instance, _secret = media
    name = instance.name
    body = bytes(range(256)) * 1000  # larger than one chunk
    (instance / "data.bin").write_bytes(body)
    (instance / "page.html").write_text("<script>alert(1)</script>")
    (instance / "notes.txt").write_text("plain")
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{url}/{name}/data.bin")
        assert answer.status_code == 200 and answer.content == body
        assert answer.headers["content-length"] == str(len(body))
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"] == "attachment"
        etag, modified = answer.headers["etag"], answer.headers["last-modified"]
        assert client.get(f"{url}/{name}/data.bin",
                          headers={"If-None-Match": etag}).status_code == 304
        assert client.get(f"{url}/{name}/data.bin",
                          headers={"If-Modified-Since": modified}).status_code == 304
        head = client.head(f"{url}/{name}/data.bin")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(body)) and head.headers["etag"] == etag
        part = client.get(f"{url}/{name}/data.bin", headers={"Range": "bytes=70000-70009"})
        assert part.status_code == 206 and part.content == body[70000:70010]
        assert part.headers["content-range"] == f"bytes 70000-70009/{len(body)}"
        parts = client.get(f"{url}/{name}/data.bin", headers={"Range": "bytes=0-1,300-301"})
        assert parts.status_code == 206
        assert parts.headers["content-type"].startswith("multipart/byteranges")
        assert body[0:2] in parts.content and body[300:302] in parts.content
        page = client.get(f"{url}/{name}/page.html")
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-disposition"] == "attachment"
        assert "sandbox" in page.headers["content-security-policy"]
        notes = client.get(f"{url}/{name}/notes.txt")
        assert notes.headers["content-type"].startswith("text/plain")
        assert "content-disposition" not in notes.headers
        for method in ("POST", "PUT", "DELETE"):
            refused = client.request(method, f"{url}/{name}/notes.txt")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert (instance / "notes.txt").read_text() == "plain"
