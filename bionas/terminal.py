"""What the `bionas` command prints besides its results: the consoles, warnings and error messages."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from bionas.errors import BionasError

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def fail(error: BionasError) -> typer.Exit:
    # Escaped: a message may hold brackets (pip install 'bionas[mlflow]') that rich would take for markup.
    err_console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)
