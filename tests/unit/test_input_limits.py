"""Input that would break things later is refused where it comes in (exit 2 / HTTP 400)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.actions import projects, variables
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.store.db import Store
from tether.store.models import Region


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    with store.session() as s:
        s.add(Region(name="local", family="local"))
    yield Context(store=store, box=SecretBox.from_data_dir(tmp_path), data_dir=tmp_path)
    store.dispose()


@pytest.mark.parametrize("path", ["/health\r\nX-Injected: 1", "/a b", "/tab\there", "/nul\x00",
                                  "/" + "a" * 1024])
def test_a_health_path_that_would_break_the_request_is_refused(ctx: Context, path: str) -> None:
    with pytest.raises(UserError, match="invalid health path"):
        projects.create_project(ctx, "shop", health_path=path)
    projects.create_project(ctx, "shop", health_path="/health?x=%20")
    with pytest.raises(UserError, match="invalid health path"):
        projects.update_project(ctx, "shop", health_path=path)


def test_app_commands_and_directories_are_bounded_and_nul_free(ctx: Context) -> None:
    with pytest.raises(UserError, match="too long"):
        projects.create_project(ctx, "shop", app_command="x" * 4097)
    with pytest.raises(UserError, match="NUL"):
        projects.create_project(ctx, "shop", app_command="python\x00app.py")
    with pytest.raises(UserError, match="line breaks"):
        projects.create_project(ctx, "shop", app_dir="/srv/app\n/etc")
    # an app directory must exist (outside the data dir): each release runs from a copy of it
    projects.create_project(ctx, "shop", app_command="python app.py",
                            app_dir=str(Path(__file__).parent))
    with pytest.raises(UserError, match="too long"):
        projects.update_project(ctx, "shop", app_command="x" * 4097)


def test_a_nul_in_a_variable_value_is_refused(ctx: Context) -> None:
    """An environment cannot hold a NUL: the value used to be stored, then every deploy of the
    environment failed."""
    projects.create_project(ctx, "shop")
    with pytest.raises(UserError, match="NUL"):
        variables.set_variable(ctx, "shop", "test", "TOKEN", "abc\x00def")
    variables.set_variable(ctx, "shop", "test", "TOKEN", "abc def\nmulti-line is fine")
