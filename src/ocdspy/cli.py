"""The `ocdspy` command line: a thin shell over the stage functions.

Results go to stdout, progress and errors to stderr. Every expected failure is an `OcdspyError`,
printed as one red line here (with a traceback only under `--debug`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ocdspy import __version__
from ocdspy.errors import OcdspyError

app = typer.Typer(
    name="ocdspy",
    help="Turn recorded OpenCode sessions into an optimized DSPy prompt and an OpenCode agent.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show and check the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: ./config.yaml when present).",
        dir_okay=False,
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable report.")]


def handle_errors(fn: F) -> F:
    """Turn OcdspyError into one red line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OcdspyError as e:
            if _state["debug"]:
                err.print_exception()
            err.print(
                f"[bold red]error:[/] {e.message}", highlight=False, markup=True, soft_wrap=True
            )
            if e.hint:
                err.print(f"  [yellow]hint:[/] {e.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"ocdspy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


def _rel(path: str) -> str:
    """Show paths under the working directory relative to it: shorter tables, same meaning."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return path


def _load(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from ocdspy.config import load_settings

    return load_settings(config, overrides=overrides)


# ---------------------------------------------------------------------------------------------
# init / config


@app.command()
@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Project directory.")] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing files (a backup is kept).")
    ] = False,
) -> None:
    """Scaffold a project: config.yaml, .env.example, data/ and outputs/ folders."""
    from ocdspy.scaffold import init_project

    res = init_project(directory, force=force)
    for name in res.created:
        out.print(f"[green]created[/]     {directory / name}")
    for name in res.overwritten:
        out.print(f"[yellow]overwritten[/] {directory / name}")
    for name in res.kept:
        out.print(f"[dim]kept[/]        {directory / name}")
    if any(k in ("config.yaml", ".env.example") for k in res.kept):
        out.print("[dim]existing files were kept; use --force to replace them (with a backup)[/]")


@config_app.command("show")
@handle_errors
def config_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings and where each one came from."""
    from ocdspy.config import settings_as_rows

    loaded = _load(config)
    rows = settings_as_rows(loaded)
    if as_json:
        out.print_json(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}))
        return
    table = Table(title=f"settings ({loaded.config_file or 'no config file'})")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source", style="dim")
    for k, v, s in rows:
        table.add_row(k, v, s)
    out.print(table)


# ---------------------------------------------------------------------------------------------
# validate


@app.command()
@handle_errors
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files, directories or glob patterns (default: data.raw_dir).", show_default=False
        ),
    ] = None,
    config: ConfigOpt = None,
    min_examples: Annotated[
        int | None, typer.Option(help="Fewest usable examples required.", show_default=False)
    ] = None,
    require_success: Annotated[
        bool | None,
        typer.Option(
            "--require-success/--allow-failures",
            show_default=False,
            help="Count only successful turns as usable.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check session logs: parse every file, report problems, check the data requirements."""
    from ocdspy.validate import validate as run_validate

    s = _load(
        config, {"data.min_examples": min_examples, "data.require_success": require_success}
    ).settings
    inputs = list(paths) if paths else [s.data.raw_dir]
    report = run_validate(
        inputs, min_examples=s.data.min_examples, require_success=s.data.require_success
    )
    if as_json:
        data = report.model_dump(mode="json")
        for f, fr in zip(data["files"], report.files, strict=False):
            f["status"] = fr.status
        data["valid"] = report.valid
        out.print_json(json.dumps(data))
        raise typer.Exit(report.exit_code)

    table = Table(title="session logs")
    table.add_column("file", overflow="fold")
    for col, just in (
        ("format", "left"),
        ("sessions", "right"),
        ("examples", "right"),
        ("successful", "right"),
        ("actions", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    style = {"ok": "[green]ok[/]", "warnings": "[yellow]warnings[/]", "invalid": "[red]invalid[/]"}
    for f in report.files:
        table.add_row(
            _rel(f.file),
            f.format,
            str(f.sessions),
            str(f.examples),
            str(f.successful),
            str(f.actions),
            style[f.status],
        )
    if report.files:
        out.print(table)
    for p in report.problems:
        color = "red" if p.severity == "error" else "yellow"
        loc = f"{_rel(p.file)}: {p.path}: " if p.path else f"{_rel(p.file)}: "
        out.print(f"[{color}]{p.severity}[/] {loc}{p.message}", highlight=False, soft_wrap=True)
    for r in report.requirements:
        mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
        out.print(f"{mark} {r.message}", highlight=False)
        if r.fix:
            out.print(f"  [yellow]fix:[/] {r.fix}", highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


# ---------------------------------------------------------------------------------------------
# convert / split


@app.command()
@handle_errors
def convert(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Inputs (default: data.raw_dir).", show_default=False),
    ] = None,
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output directory (default: data.processed_dir).", show_default=False
        ),
    ] = None,
    require_success: Annotated[
        bool | None,
        typer.Option(
            "--require-success/--allow-failures",
            show_default=False,
            help="Keep only successful turns.",
        ),
    ] = None,
    result_max_chars: Annotated[
        int | None, typer.Option(help="Truncate tool results to this length.", show_default=False)
    ] = None,
    redact: Annotated[
        bool | None,
        typer.Option(
            "--redact/--no-redact",
            show_default=False,
            help="Replace secrets with placeholders (on by default).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if nothing changed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn session logs into examples.jsonl (one example per turn) and a manifest."""
    from ocdspy.convert import convert as run_convert

    loaded = _load(
        config,
        {
            "data.processed_dir": out_dir,
            "data.require_success": require_success,
            "data.result_max_chars": result_max_chars,
            "data.redact": redact,
        },
    )
    s = loaded.settings
    if not s.data.redact:
        err.print(
            "[yellow]warning:[/] redaction is off: secrets in the logs will be written "
            "into examples and may reach a model or an exported prompt"
        )
    inputs = list(paths) if paths else [s.data.raw_dir]
    with err.status("converting sessions…"):
        res = run_convert(
            inputs,
            s.data.processed_dir,
            require_success=s.data.require_success,
            result_max_chars=s.data.result_max_chars,
            redact=s.data.redact,
            force=force,
        )
    m = res.manifest
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "cached": res.cached,
                    "examples": str(res.examples_path),
                    **m.model_dump(mode="json"),
                }
            )
        )
        return
    if res.cached:
        out.print(
            f"inputs and settings unchanged: {_rel(str(res.examples_path))} is up to date "
            f"({m.examples_kept} examples); use --force to rebuild"
        )
        return
    for p in res.problems:
        color = "red" if p.severity == "error" else "yellow"
        out.print(f"[{color}]{p.severity}[/] {p}", highlight=False, soft_wrap=True)
    out.print(f"read {m.sessions_read} sessions, {m.turns_in} turns from {len(m.sources)} inputs")
    out.print(f"[green]wrote {m.examples_kept} examples[/] to {_rel(str(res.examples_path))}")
    for reason, n in m.dropped.items():
        out.print(f"  dropped {n}: {reason}")
    if m.redactions:
        kinds = ", ".join(f"{k} {n}" for k, n in m.redactions.items())
        out.print(f"  redacted {sum(m.redactions.values())} secrets ({kinds})")
    out.print(f"manifest: {_rel(str(res.manifest_path))}")


@app.command()
@handle_errors
def split(
    config: ConfigOpt = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            help="examples.jsonl (default: data.processed_dir/examples.jsonl).", show_default=False
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output directory (default: data.splits_dir).", show_default=False
        ),
    ] = None,
    train_split: Annotated[
        float | None, typer.Option(help="Fraction of sessions to train on.", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Split examples into train and validation sets, grouped by session."""
    from ocdspy.split import split as run_split

    overrides: dict[str, Any] = {"data.splits_dir": out_dir, "data.seed": seed}
    if train_split is not None:
        overrides["data.train_split"] = train_split
        overrides["data.val_split"] = round(1.0 - train_split, 10)
    s = _load(config, overrides).settings
    src = examples or s.data.processed_dir / "examples.jsonl"
    res = run_split(src, s.data.splits_dir, train_fraction=s.data.train_split, seed=s.data.seed)
    m = res.manifest
    if as_json:
        out.print_json(m.model_dump_json())
        return
    for name, side, path in (("train", m.train, res.train_path), ("val", m.val, res.val_path)):
        out.print(
            f"{name:5} {side.examples:4} examples from {side.sessions:3} sessions "
            f"({side.successful} successful, {side.failed} failed) -> {_rel(str(path))}",
            soft_wrap=True,
        )
    out.print(f"manifest: {_rel(str(res.manifest_path))}")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
