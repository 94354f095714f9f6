"""The CLI's command table and the package's lazy names stay true to what they stand for."""

from __future__ import annotations

import click
import pytest

import pipemesh
from pipemesh.cli import cli
from pipemesh.cli._common import MeshGroup


def _loaded_group() -> click.Group:
    """A plain click group holding every command of ``cli``, all imported."""
    group = click.Group("pipemesh")
    for name in cli.list_commands(click.Context(cli)):
        group.add_command(cli.load_command(name), name)
    return group


def test_every_command_summary_is_its_help_first_sentence() -> None:
    """Each registered summary is what click would list for the imported command."""
    assert cli.lazy_commands, "commands are registered lazily"
    for name, lazy in cli.lazy_commands.items():
        cmd = cli.load_command(name)
        assert cmd.name == name, f"{lazy.target} is named {cmd.name!r}, registered as {name!r}"
        assert not cmd.short_help, f"{name}: the listing derives from help, not short_help"
        assert not cmd.hidden
        assert lazy.summary == cmd.get_short_help_str(limit=10_000), name


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_command_listing_matches_click_with_every_command_imported(width: int) -> None:
    """'pipemesh --help' lists the same lines as click would with all commands imported."""
    fresh = MeshGroup("pipemesh")
    fresh.lazy_commands = dict(cli.lazy_commands)  # nothing imported through this group
    lazy = click.HelpFormatter(width=width)
    fresh.format_commands(click.Context(fresh), lazy)
    eager = click.HelpFormatter(width=width)
    loaded = _loaded_group()
    click.Group.format_commands(loaded, click.Context(loaded), eager)
    assert lazy.getvalue() == eager.getvalue()
    assert not fresh.commands


def test_unknown_command_is_none_and_eager_commands_still_work() -> None:
    """An unknown name gives None (click's 'No such command'); add_command still works."""
    group = MeshGroup("g")
    ctx = click.Context(group)
    assert group.get_command(ctx, "nope") is None

    @click.command()
    def hello() -> None:
        """Say hello."""

    group.add_command(hello)
    assert group.list_commands(ctx) == ["hello"]
    assert group.get_command(ctx, "hello") is hello
    assert {p.name for p in hello.params} >= {"home", "as_json", "debug"}


def test_package_names_resolve_lazily() -> None:
    """Every name in pipemesh.__all__ resolves, is listed by dir(), and is cached."""
    for name in pipemesh.__all__:
        value = getattr(pipemesh, name)
        assert name in vars(pipemesh), f"{name} is cached after first use"
        assert getattr(pipemesh, name) is value
    assert set(pipemesh.__all__) <= set(dir(pipemesh))
    from pipemesh import AgentBase  # the import form the README shows
    from pipemesh.runtime.agent import AgentBase as Real

    assert AgentBase is Real
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(pipemesh, "Nope")  # noqa: B009 - an unknown name, on purpose
