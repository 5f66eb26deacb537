"""The one place bionas reads Typer's internals: the commands plugins add, and built-ins they may not replace.

Typer keeps registered commands and sub-apps in `app.registered_commands` and
`app.registered_groups` and derives a command's name from its callback when none
is given. Nothing else of bionas depends on how Typer stores them.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from bionas.errors import one_line
from bionas.registry import Registry


def command_name(item) -> str:
    """The CLI name Typer gives a registered command or group."""
    if getattr(item, "name", None):
        return item.name
    typer_instance = getattr(item, "typer_instance", None)
    if typer_instance is not None and typer_instance.info.name:
        return typer_instance.info.name
    callback = getattr(item, "callback", None)
    return callback.__name__.replace("_", "-") if callback else ""


def command_names(app: typer.Typer) -> set[str]:
    """The names of the commands and command groups `app` has."""
    return {command_name(item) for item in app.registered_commands + app.registered_groups}


def add_plugin_commands(app: typer.Typer, registry: Registry, warn: Callable[[str], None],
                        builtin: set[str] | None = None) -> None:
    """Let plugins add commands to `app`; a command that would replace one `app` had, or one named in
    `builtin`, is removed with a warning.

    A plugin whose hook raises is reported as a plugin problem (fatal under BIONAS_STRICT_PLUGINS).
    """
    builtin = command_names(app) | set(builtin or ())
    for plugin, hook in registry.command_hooks():
        before_commands, before_groups = len(app.registered_commands), len(app.registered_groups)
        try:
            hook(app=app)
        except Exception as exc:  # a broken plugin must not take the command line down
            registry.add_problem(plugin, f"adding commands failed: {one_line(exc)}")
            continue
        new_commands = app.registered_commands[before_commands:]
        new_groups = app.registered_groups[before_groups:]
        for item in new_commands + new_groups:
            name = command_name(item)
            if name in builtin:
                warn(f"plugin '{plugin}' tried to replace the built-in command '{name}'; ignored")
                (app.registered_commands if item in new_commands else app.registered_groups).remove(item)
    registry.raise_if_strict()
