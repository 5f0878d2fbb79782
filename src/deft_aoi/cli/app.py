"""The `deft` command. Each command lives in its own module with a `register(app)` function; those
modules import nothing heavy at top level so `deft --help` stays fast."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import NoReturn

import typer
from typer.core import TyperGroup

from deft_aoi import __version__
from deft_aoi.console import echo_json
from deft_aoi.errors import DeftError, Interrupted


def _report(exc: DeftError) -> None:
    from deft_aoi.console import err_console
    from deft_aoi.secrets import redact

    err_console().print(f"error: {redact(exc.render())}", markup=False, highlight=False)


def _report_interrupt() -> None:
    from deft_aoi.console import err_console

    err_console().print("interrupted", markup=False, highlight=False)


def _unexpected(exc: Exception, command: str) -> DeftError:
    """A filesystem refusal becomes its one-line explanation; anything else one line naming the command and
    the file that holds the traceback (never the traceback itself)."""
    from deft_aoi.errors import disk_error, write_traceback

    if isinstance(exc, OSError) and (problem := disk_error(exc)) is not None:
        return problem
    import tempfile
    import time

    details = write_traceback(Path(tempfile.gettempdir()) / f"deft-{command}-{time.strftime('%Y%m%d_%H%M%S')}.txt",
                              exc)
    return DeftError(f"internal error in `deft {command}`: {exc!r} ({details})",
                     hint="this is a bug in deft; please report it with that file")


def _wants_json(ctx: typer.Context) -> bool:
    return "--json" in [*getattr(ctx, "protected_args", []), *ctx.args]


class DeftGroup(TyperGroup):
    """Maps our errors to a message on stderr and their exit code, for every command and in tests alike.

    With `--json`, the error is also one JSON document on stdout, so a script never reads an empty stdout."""

    # typer creates every context as typer.Context (its context_class); the base signature names the click class
    # typer vendors privately (typer._click.Context), which it does not export for us to name.
    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        as_json = _wants_json(ctx)
        try:
            return super().invoke(ctx)
        except DeftError as exc:
            self._fail(exc, as_json)
        except KeyboardInterrupt:  # outside a loop stage (pre-flight, confirmation, imports)
            _report_interrupt()
            raise typer.Exit(Interrupted.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: typer prints them
            raise
        except Exception as exc:
            self._fail(_unexpected(exc, ctx.invoked_subcommand or "deft"), as_json)

    @staticmethod
    def _fail(exc: DeftError, as_json: bool) -> NoReturn:
        _report(exc)
        if as_json:
            import json

            from deft_aoi.secrets import redact

            doc = {"error": redact(exc.message), "file": exc.file, "row": exc.row, "hint": exc.hint,
                   "exit_code": exc.exit_code}
            echo_json(json.dumps(doc, indent=2))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="deft",
    cls=DeftGroup,
    help="Run the DEFT improvement loop for PCB AOI change-detection models until the KPI is met.\n\n"
    "Exit codes: 0 ok · 1 a check, stage or hard stop failed · 2 usage error · 130 interrupted.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion: click builds the script on demand
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

COMMAND_MODULES: tuple[str, ...] = (
    "init_cmd",
    "backbone_cmd",
    "demo_cmd",
    "preflight_cmd",
    "run_cmd",
    "status_cmd",
    "report_cmd",
    "kpi_cmd",
    "mine_cmd",
    "platforms_cmd",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deft-aoi {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


for _name in COMMAND_MODULES:
    importlib.import_module(f"deft_aoi.cli.{_name}").register(app)


def main() -> None:
    """Run the app (the `deft` entry point, `cli/__main__.py`, has installed deft's Ctrl-C handler first)."""
    try:
        app()
    except DeftError as exc:
        _report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _report_interrupt()
        sys.exit(Interrupted.exit_code)
