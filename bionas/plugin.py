"""The base every plugin class shares: a name, a one-line description and validated Options."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bionas.errors import PluginError, SpecError, format_pydantic_errors

NAME_PATTERN = re.compile(r"^[a-z0-9_.-]+$")


class PluginOptions(BaseModel):
    """Base of every plugin's `Options`: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Plugin:
    """A plugin class: `name`, `description` and a nested `Options` model.

    Instances are made with keyword options, validated against `Options`:
    `SomeRule(seed=3)` or `bionas.get_rule("some", seed=3)`.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    def __init__(self, options: BaseModel | dict[str, Any] | None = None, /, **kwargs: Any):
        if isinstance(options, BaseModel):
            options = options.model_dump()
        values = {**(options or {}), **kwargs}
        try:
            self.options = self.Options.model_validate(values)
        except ValidationError as err:
            prefix = f"{self.kind} '{self.name}' options"
            raise SpecError(format_pydantic_errors(err), source=prefix) from None

    @classmethod
    def spec_errors(cls, options: PluginOptions, spec: Any) -> list[str]:
        """What this plugin can tell is wrong with its validated `options` in the whole run `spec`, before
        any work starts: `bionas validate` reports each under the plugin's path. Each message starts with
        the field it is about, relative to the plugin reference ("options.eps: ..."). Default: nothing
        beyond what Options checks."""
        return []

    def __repr__(self) -> str:
        changed = self.options.model_dump(exclude_defaults=True)
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"


def check_plugin_class(cls: type, base: type[Plugin]) -> None:
    """Raise PluginError if `cls` does not keep the plugin contract of `base`."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{cls!r} is not a subclass of bionas.{base.__name__}")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(f"{cls.__qualname__}.name must be lowercase [a-z0-9_.-]+, got {name!r}")
    if not getattr(cls, "description", "").strip():
        raise PluginError(f"{cls.__qualname__} ({name}) has no description")
    options = cls.Options
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"{cls.__qualname__}.Options must be a pydantic BaseModel")
    if options.model_config.get("extra") != "forbid":
        raise PluginError(f"{cls.__qualname__}.Options must set extra='forbid' (subclass bionas.PluginOptions)")
    undocumented = [f for f, info in options.model_fields.items() if not info.description]
    if undocumented:
        raise PluginError(f"{cls.__qualname__}.Options fields without a description: {', '.join(undocumented)}")
