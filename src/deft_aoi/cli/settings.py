"""Command-line options generated from the loop's settings (config.LoopConfig): a new setting becomes a flag
of `deft run` / `deft preflight` (and of `deft mine` where it applies) with no edit here.

The options are built the first time a command's parameters are needed (its parsing, its --help, shell
completion), not when the command is registered: the declaration lives on a pydantic model and `deft --help`
must not import pydantic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand

_META_KEY = "deft.settings"


def given_settings(ctx: typer.Context) -> dict[str, Any]:
    """The generated options' values of the running command (its `ctx: typer.Context` parameter): setting
    name → value (None = not given, on commands that keep provenance; the declared default on the others)."""
    values: dict[str, Any] = ctx.meta.get(_META_KEY, {})
    return values


def _options(names: Sequence[str] | None) -> tuple[list[Any], dict[str, list[str]]]:
    """The options of the named settings (all when None), and setting → the names of its hidden aliases.

    They are built the way typer builds any command's options (a signature → a throwaway Typer app), so they
    parse and print exactly like the hand-written ones beside them."""
    import inspect

    from deft_aoi.config import SETTINGS, literal_choices, value_type

    parameters: list[inspect.Parameter] = []
    aliases: dict[str, list[str]] = {}

    def add(name: str, annotation: Any, option: Any) -> None:
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=annotation))

    for name in names if names is not None else SETTINGS:
        setting = SETTINGS[name]
        kind = value_type(name)
        options_of = literal_choices(name)
        help_text = setting.help
        if setting.default is not None:
            help_text += f" [default: {setting.default}]"
        if kind is bool:
            decl = f"{setting.flag}/{setting.off_flag}" if setting.off_flag else setting.flag
            add(name, bool | None, typer.Option(None, decl, help=help_text, show_default=False))
            continue
        # Choices are checked by the config (one message naming the setting), not by click.
        annotation = int | None if kind is int else float | None if kind in (float, float | None) else str | None
        metavar = setting.metavar or ("|".join(options_of) if options_of else None)
        add(name, annotation, typer.Option(None, setting.flag, help=help_text, show_default=False, metavar=metavar))
        for i, alias in enumerate(setting.aliases):
            hidden = f"{name}__alias{i}"
            aliases.setdefault(name, []).append(hidden)
            add(hidden, annotation, typer.Option(None, alias, hidden=True))

    def generated(**_: Any) -> None:
        """Carries the generated signature only."""

    generated.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    holder = typer.Typer(add_completion=False)
    holder.command()(generated)
    return list(typer.main.get_command(holder).params), aliases


def settings_command(names: Sequence[str] | None = None, *, with_defaults: bool = False) -> type[TyperCommand]:
    """A command class whose parameters also include the options of these settings (all when None).

    with_defaults: not given → the declared default (commands without provenance, e.g. `deft mine`);
    otherwise None, so the config can tell a flag from the spec and the default."""

    class SettingsCommand(TyperCommand):
        _generated: dict[str, list[str]] | None = None

        def _ensure(self) -> dict[str, list[str]]:
            if self._generated is None:
                options, aliases = _options(names)
                self.params.extend(options)
                self._generated = {o.name: aliases.get(o.name, []) for o in options
                                   if o.name and "__alias" not in o.name}
            return self._generated

        def get_params(self, ctx: Any) -> list[Any]:
            self._ensure()
            return super().get_params(ctx)

        def invoke(self, ctx: Any) -> Any:
            from deft_aoi.config import SETTINGS

            values: dict[str, Any] = {}
            for name, alias_dests in self._ensure().items():
                value = ctx.params.pop(name, None)
                for dest in alias_dests:
                    old = ctx.params.pop(dest, None)
                    value = old if value is None else value
                if value is None and with_defaults:
                    value = SETTINGS[name].default
                values[name] = value
            ctx.meta[_META_KEY] = values
            return super().invoke(ctx)

    return SettingsCommand

