"""Issue 8, finding 2: app commands ran through `/bin/sh -c` whatever they were. A plain command is
now split into argv and executed without a shell; a command asking for a shell keeps one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.engine.releases import release_secrets, secret_parts
from tether.runtime.appcopy import _ignored, read_ignore_file
from tether.runtime.command import command_argv, named_programs, needs_shell


@pytest.mark.parametrize("command, argv", [
    ("python app.py", ["python", "app.py"]),
    ("python examples/hello/app.py --workers 2", ["python", "examples/hello/app.py",
                                                  "--workers", "2"]),
    ("gunicorn 'shop.wsgi:application' --bind=127.0.0.1",
     ["gunicorn", "shop.wsgi:application", "--bind=127.0.0.1"]),
    ('sh -c "python app.py"', ["sh", "-c", "python app.py"]),
    ("/srv/venv/bin/python -m shop", ["/srv/venv/bin/python", "-m", "shop"]),
])
def test_a_plain_command_runs_without_a_shell(command: str, argv: list[str]) -> None:
    assert not needs_shell(command)
    assert command_argv(command) == argv


@pytest.mark.parametrize("command", [
    "python app.py | tee out.log", "migrate && serve", "serve; echo done", "serve > log",
    "serve < in", "(serve)", "serve --port $PORT", "serve `date`", "serve *.conf", "serve ~/x",
    "serve # a comment", "DEBUG=1 python app.py", "exec python app.py", "cd src && serve",
    ". ./env && serve", "export A=1", "python 'unbalanced", "serve \\\n --fast", "",
])
def test_a_command_asking_for_a_shell_gets_one(command: str) -> None:
    assert needs_shell(command)
    assert command_argv(command) == ["/bin/sh", "-c", command]


def test_the_programs_a_command_names() -> None:
    assert named_programs("python app.py") == ["python"]
    shell = named_programs("cd src && exec gunicorn app | tee /tmp/x")
    assert {"cd", "src", "exec", "gunicorn", "app", "tee", "/tmp/x"} <= set(shell)
    assert not set(shell) & {"&&", "|"}


@pytest.mark.parametrize("command, programs", [
    # a plain command running a shell itself
    ('sh -c "python app.py"', {"sh", "python"}),
    ("/bin/bash -c 'exec /srv/venv/bin/python -m shop'", {"/bin/bash", "/srv/venv/bin/python"}),
    # a command run through the shell (the script's `;` is quoted, but it counts) — seen in a
    # full run: the interpreter after `exec` was not made reachable, and the app exited 126
    ("/bin/sh -c 'sleep 12; exec /srv/venv/bin/python app.py'",
     {"/bin/sh", "sleep", "exec", "/srv/venv/bin/python"}),
    ("bash -c \"sh -c 'gunicorn shop'\" | tee log", {"bash", "sh", "gunicorn", "tee"}),
])
def test_the_programs_of_an_explicit_shells_script(command: str, programs: set[str]) -> None:
    """The script of `sh -c SCRIPT` names programs the app runs: their way must be opened
    for the app's user as for any other (tether.runtime.accounts)."""
    assert programs <= set(named_programs(command))


def test_tetherignore_patterns(tmp_path: Path) -> None:
    (tmp_path / ".tetherignore").write_text(
        "# comment\n\n.test-servers/\n*.log\n/build\ndocs/drafts\n!keep.log\n")
    patterns = read_ignore_file(tmp_path)

    def ignored(relative: str, is_dir: bool = False) -> bool:
        return _ignored(patterns, relative, relative.rsplit("/", 1)[-1], is_dir)

    assert ignored(".test-servers", is_dir=True) and ignored("a/.test-servers", is_dir=True)
    assert not ignored(".test-servers")  # a trailing / matches directories only
    assert ignored("x.log") and ignored("deep/down/y.log") and ignored("keep.log")
    assert ignored("build", is_dir=True) and not ignored("src/build", is_dir=True)
    assert ignored("docs/drafts", is_dir=True) and not ignored("drafts", is_dir=True)
    assert not ignored("app.py")


def test_every_secret_component_is_masked() -> None:
    """Finding 6: a DSN's bare password, a SAS token's signature."""
    parts = secret_parts("postgres://shop:p%40ss-word-1@db:5432/shop")
    assert {"postgres://shop:p%40ss-word-1@db:5432/shop", "p%40ss-word-1", "p@ss-word-1"} <= \
        set(parts)
    sas = "az://acct:sv%3D2022%26sig%3DAb%252Bcd%253D@acct.blob.core.windows.net/c"
    assert {"Ab+cd=", "Ab%2Bcd%3D"} <= set(secret_parts(sas))
    assert "s3cr3t-Value" in secret_parts("https://api.example.net/hook?token=s3cr3t-Value&x=1")
    assert "Ab+cd=" not in secret_parts("az://acct@host/c?x=Ab%2Bcd%3D")  # not a secret name
    everything = release_secrets({"STAGE": "test", "DATABASE_URL": "postgres://u:pw-12345@h/d"})
    assert "test" not in everything and "pw-12345" in everything
