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
from rich.markup import escape as rich_escape
from rich.table import Table

from ocdspy import __version__
from ocdspy.display import printable, show_path
from ocdspy.errors import Interrupted, OcdspyError
from ocdspy.lm.providers import mask_keys

app = typer.Typer(
    name="ocdspy",
    help="Turn recorded OpenCode sessions into an optimized DSPy prompt and an OpenCode agent.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Our errors are printed by handle_errors; rich tracebacks would only cost start-up time.
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
    """Turn OcdspyError into one red line on stderr and its exit code, and a stage's Ctrl-C
    (`Interrupted`) into one line saying what was kept, exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            err.print(f"[yellow]interrupted:[/] {e.kept}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except OcdspyError as e:
            if _state["debug"]:
                err.print_exception()
            message = mask_keys(e.message)  # the last guard: no API key is ever printed
            err.print(
                f"[bold red]error:[/] {_text(message)}",
                highlight=False,
                markup=True,
                soft_wrap=True,
            )
            if e.hint:
                err.print(f"  [yellow]hint:[/] {_text(e.hint)}", highlight=False, soft_wrap=True)
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


def _rel(path: str | Path | None, base: Path | None = None) -> str:
    """The one way a path is shown: relative to `base` (else the working directory) when it
    lies below it; control characters escaped and Rich markup neutralised, so a file name can
    neither split a line nor drive the terminal."""
    if path is None:
        return "-"
    shown = str(path)
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            shown = str(Path(path).resolve().relative_to(root.resolve()))
            break
        except (ValueError, OSError):
            continue
    return _text(show_path(shown))


def _text(message: str) -> str:
    """Text from outside (messages that quote file names, session text) for a markup string."""
    return rich_escape(printable(message))


def _problem(severity: str, file: str, where: str, message: str) -> None:
    """One input problem as `severity file: json.path: message` on stdout (part of the report)."""
    color = "red" if severity == "error" else "yellow"
    loc = f"{_rel(file)}: {_text(where)}: " if where else f"{_rel(file)}: "
    out.print(f"[{color}]{severity}[/] {loc}{_text(message)}", highlight=False, soft_wrap=True)


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {_text(message)}", highlight=False, soft_wrap=True)


def _load(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from ocdspy.config import load_settings

    loaded = load_settings(config, overrides=overrides)
    for w in loaded.warnings:
        _warn(w)
    return loaded


def _warn_teacher(settings: Any) -> set[str]:
    """Say before any LM call that the optimizer needs a better teacher; returns what was said."""
    from ocdspy.config import capable_teacher_warning

    w = capable_teacher_warning(settings)
    if w:
        _warn(w)
    return {w} if w else set()


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
        out.print(f"[green]created[/]     {_rel(directory / name)}")
    for name in res.overwritten:
        out.print(f"[yellow]overwritten[/] {_rel(directory / name)}")
    for name in res.kept:
        out.print(f"[dim]kept[/]        {_rel(directory / name)}")
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
    # One directory in: name files relative to it, and say which directory in the title.
    base = inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None
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

    table = Table(title=f"session logs in {_rel(str(base))}" if base else "session logs")
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
            _rel(f.file, base),
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
        _problem(p.severity, p.file, p.path, p.message)
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
    # A file that could not be read fails the command (exit 1), after the others are converted.
    failed = sum(p.severity == "error" for p in res.problems)
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
        raise typer.Exit(1 if failed else 0)
    for p in res.problems:
        _problem(p.severity, p.file, p.where, p.message)
    if res.cached:
        out.print(
            f"inputs and settings unchanged: {_rel(str(res.examples_path))} is up to date "
            f"({m.examples_kept} examples); use --force to rebuild"
        )
        raise typer.Exit(1 if failed else 0)
    out.print(f"read {m.sessions_read} sessions, {m.turns_in} turns from {len(m.sources)} inputs")
    out.print(f"[green]wrote {m.examples_kept} examples[/] to {_rel(str(res.examples_path))}")
    for reason, n in m.dropped.items():
        out.print(f"  dropped {n}: {reason}")
    if m.redactions:
        kinds = ", ".join(f"{k} {n}" for k, n in m.redactions.items())
        out.print(f"  redacted {sum(m.redactions.values())} secrets ({kinds})")
    out.print(f"manifest: {_rel(str(res.manifest_path))}")
    if failed:
        err.print(
            f"[red]{failed} input problem(s)[/] (listed above); the other inputs were converted",
            highlight=False,
        )
        raise typer.Exit(1)


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
    from ocdspy.layout import Project
    from ocdspy.split import split as run_split

    overrides: dict[str, Any] = {"data.splits_dir": out_dir, "data.seed": seed}
    if train_split is not None:
        overrides["data.train_split"] = train_split
        overrides["data.val_split"] = round(1.0 - train_split, 10)
    s = _load(config, overrides).settings
    src = examples or Project(s).examples
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


# ---------------------------------------------------------------------------------------------
# collect


@app.command()
@handle_errors
def collect(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write sessions (default: data.raw_dir).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            help="OpenCode database to read (default: found as OpenCode finds it).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            help="Legacy OpenCode storage/ folder to read instead of a database.",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        list[Path] | None,
        typer.Option(
            help="Only sessions run in this directory or below it (repeatable).",
            metavar="<dir>",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only sessions updated since: 2026-01-31, 2026-01-31T14:00, 7d, 12h.",
            metavar="<when>",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            help="Only sessions that used this agent (repeatable).",
            metavar="<name>",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Only sessions that used this model, provider/model or model (repeatable).",
            metavar="<name>",
            show_default=False,
        ),
    ] = None,
    session: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this session and its sub-agent sessions (repeatable).",
            metavar="<id>",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="At most this many sessions, most recently updated first.",
            metavar="<n>",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite sessions already collected and unchanged.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy sessions out of OpenCode's own store (read-only) into data.raw_dir."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ocdspy.collect import collect as run_collect

    s = _load(config, {"data.raw_dir": out_dir}).settings
    with Progress(
        TextColumn("collecting sessions"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("collect", total=None)
        res = run_collect(
            s.data.raw_dir,
            db=db,
            storage=storage,
            project=project or (),
            since=since,
            agents=agent or (),
            models=model or (),
            sessions=session or (),
            limit=limit,
            force=force,
            on_progress=lambda n, total: progress.update(task, completed=n, total=total),
        )
    if as_json:
        data = res.model_dump(mode="json", exclude={"problems"})
        data["problems"] = [
            {"file": p.file, "path": p.where, "message": p.message, "severity": p.severity}
            for p in res.problems
        ]
        out.print_json(json.dumps(data))
        return
    for p in res.problems:
        _problem(p.severity, p.file, p.where, p.message)
    st = res.store
    out.print(
        f"store: {_rel(st.path)} ({st.format}, found via {st.found_by}); "
        f"{res.sessions_in_store} sessions",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"[green]collected {res.selected} sessions[/]: {len(res.written)} written, "
        f"{res.unchanged} unchanged, {res.empty} without messages -> {_rel(res.out_dir)}",
        highlight=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------------------------------------
# export


@app.command()
@handle_errors
def export(
    program: Annotated[
        str | None,
        typer.Argument(
            help="Program name or path (default: the newest in outputs/programs).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    name: Annotated[
        str | None,
        typer.Option(help="Agent name (default: <model>-optimized).", show_default=False),
    ] = None,
    install_to: Annotated[
        Path | None,
        typer.Option(
            "--install-to",
            help="Copy the agent into this OpenCode agent folder (e.g. ~/.config/opencode/agents).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="primary, subagent or all.", case_sensitive=False)
    ] = "primary",
    set_default: Annotated[
        bool,
        typer.Option(
            "--set-default",
            help="Make it OpenCode's default_agent "
            "(opencode.json next to the install folder; a backup is kept).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an installed agent of that name (backed up).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the optimized program as an OpenCode agent file, and optionally install it."""
    from ocdspy.evaluate import resolve_program
    from ocdspy.export import export_program

    if mode not in ("primary", "subagent", "all"):
        raise typer.BadParameter("must be primary, subagent or all", param_hint="--mode")
    s = _load(config).settings
    res = export_program(
        s,
        resolve_program(s, program),
        name=name,
        mode=mode,  # type: ignore[arg-type]
        install_to=install_to,
        set_default=set_default,
        force=force,
    )
    err.print(f"program: {res.program_used}", highlight=False, soft_wrap=True)
    for w in res.warnings:
        _warn(w)
    if as_json:
        out.print_json(res.model_dump_json())
        return
    out.print(
        f"[green]wrote[/] {_rel(str(res.agent_path))} (agent [bold]{res.name}[/], "
        f"{res.front_matter.mode})",
        soft_wrap=True,
    )
    out.print(f"provenance: {_rel(str(res.meta_path))}", soft_wrap=True)
    if res.installed_path:
        out.print(f"[green]installed[/] {_rel(res.installed_path)}", soft_wrap=True)
        if res.backup_path:
            out.print(f"  previous version kept as {_rel(res.backup_path)}", soft_wrap=True)
    if res.config_path:
        out.print(
            f"default_agent set in {_rel(res.config_path)}"
            + (f" (backup {_rel(res.config_backup.name)})" if res.config_backup else ""),
            soft_wrap=True,
        )
    how = (
        f"opencode --agent {res.name}"
        if res.installed_path
        else "ocdspy export --install-to ~/.config/opencode/agents, then "
        f"opencode --agent {res.name}"
    )
    out.print(f"use it: {how}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# pipeline


@app.command()
@handle_errors
def pipeline(
    config: ConfigOpt = None,
    optimizer: Annotated[
        str | None, typer.Option(help="Override optimization.optimizer.", show_default=False)
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Run name (default: <program>-<optimizer>).", show_default=False),
    ] = None,
    agent_name: Annotated[
        str | None,
        typer.Option(
            "--agent-name", help="Agent name (default: <model>-optimized).", show_default=False
        ),
    ] = None,
    install_to: Annotated[
        Path | None,
        typer.Option(
            "--install-to",
            help="Also install the agent into this OpenCode agent folder.",
            show_default=False,
        ),
    ] = None,
    set_default: Annotated[
        bool, typer.Option("--set-default", help="Make it OpenCode's default agent.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an installed agent of that name (backed up)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run validate → convert → split → optimize → evaluate → export, skipping what is current."""
    from ocdspy.layout import ReportFiles
    from ocdspy.pipeline import run_pipeline

    s = _load(config, {"optimization.optimizer": optimizer}).settings
    shown = _warn_teacher(s)
    status = err.status("starting…")
    status.start()
    try:
        res = run_pipeline(
            s,
            name=name,
            force=force,
            install_to=install_to,
            set_default=set_default,
            overwrite=overwrite,
            agent_name=agent_name,
            on_stage=lambda st: status.update(f"{st}…"),
        )
    finally:
        status.stop()
    if as_json:
        out.print_json(res.model_dump_json())
        return
    table = Table(title="pipeline")
    for col in ("stage", "status", "seconds", "detail"):
        table.add_column(col, overflow="fold")
    for st in res.stages:
        table.add_row(st.stage, st.status, f"{st.seconds:.1f}", _rel(st.detail))
    out.print(table)
    for w in res.warnings:
        if w not in shown:
            _warn(w)
    out.print(
        f"data: {res.sessions} sessions -> {res.examples} examples "
        f"(train {res.train_examples} from {res.train_sessions} sessions, "
        f"val {res.val_examples} from {res.val_sessions})",
        soft_wrap=True,
    )
    if res.baseline_score is not None and res.optimized_score is not None:
        gain = res.optimized_score - res.baseline_score
        ci = (
            f", 95% CI {res.ci_low:+.1f} to {res.ci_high:+.1f}"
            if res.ci_low is not None and res.ci_high is not None
            else ""
        )
        out.print(
            f"score on held-out sessions ({res.optimizer}): baseline "
            f"{res.baseline_score:.1f} -> optimized {res.optimized_score:.1f} "
            f"({gain:+.1f}{ci})",
            soft_wrap=True,
        )
    cost = f", cost ${res.lm_cost:.4f}" if res.lm_cost else ""
    out.print(f"LM calls this run: {res.lm_calls} ({res.lm_new_calls} not from cache){cost}")
    if res.report_path:
        markdown = ReportFiles.beside(res.report_path).markdown_path
        out.print(f"report: {_rel(str(markdown))}", soft_wrap=True)
    if res.agent_path:
        out.print(f"agent: {_rel(str(res.agent_path))}", soft_wrap=True)
        if res.installed_path:
            out.print(
                f"installed: {_rel(res.installed_path)}; start it with "
                f"`opencode --agent {res.agent_name}`",
                soft_wrap=True,
            )
        else:
            out.print(
                f"use it: ocdspy export --install-to ~/.config/opencode/agents, then "
                f"`opencode --agent {res.agent_name}`",
                soft_wrap=True,
            )
    out.print(f"done in {res.seconds:.0f} s")


# ---------------------------------------------------------------------------------------------
# optimize / evaluate


def _score_cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _auto_mode_flag(auto: str | None, trials: int | None) -> Any:
    """optimization.auto_mode from --auto/--trials: None when neither is given."""
    from ocdspy.config import UNSET

    if auto is None:
        # --trials alone means "this many", not a preset.
        return UNSET if trials is not None else None
    if auto.lower() not in ("light", "medium", "heavy", "none"):
        raise typer.BadParameter("must be light, medium, heavy or none", param_hint="--auto")
    return UNSET if auto.lower() == "none" else auto.lower()


@app.command()
@handle_errors
def optimize(
    config: ConfigOpt = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="MIPROv2, COPRO, BootstrapFewShot, BootstrapFewShotWithRandomSearch, "
            "GEPA or SIMBA.",
            show_default=False,
        ),
    ] = None,
    auto: Annotated[
        str | None,
        typer.Option(
            help="Budget preset: light, medium, heavy, or none (use --trials).", show_default=False
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            help="Trials (MIPROv2, random search) or full evaluations (GEPA) when --auto is none.",
            show_default=False,
            min=1,
        ),
    ] = None,
    program: Annotated[
        str | None, typer.Option(help="Program mode: plan or next_action.", show_default=False)
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Custom metric as package.module:function.", show_default=False),
    ] = None,
    num_threads: Annotated[
        int | None, typer.Option(help="Parallel LM calls.", show_default=False, min=1)
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Program name (default: <program>-<optimizer>).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the planned LM calls and cost, then stop.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Optimize the agent program on the training split; save it and a run record."""
    import os

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    os.environ.setdefault("TQDM_DISABLE", "1")  # DSPy's own bars would fight ours
    from ocdspy.layout import program_file_name
    from ocdspy.optimize import OptimizationInterrupted, ProgressEvent
    from ocdspy.optimize import optimize as run_optimize

    overrides: dict[str, Any] = {
        "optimization.optimizer": optimizer,
        "optimization.num_trials": trials,
        "optimization.program": program,
        "optimization.metric": metric,
        "optimization.num_threads": num_threads,
    }
    overrides["optimization.auto_mode"] = _auto_mode_flag(auto, trials)
    s = _load(config, overrides).settings
    shown = _warn_teacher(s)

    if dry_run:
        res = run_optimize(s, name=name, dry_run=True)
        if as_json:
            out.print_json(res.plan.model_dump_json())
            return
        for w in res.warnings:
            if w not in shown:
                _warn(w)
        p = res.plan
        table = Table(
            title=f"{p.optimizer} on {p.train_examples} training examples "
            f"({p.program} mode) — planned, not run"
        )
        for col, just in (
            ("role", "left"),
            ("model", "left"),
            ("LM calls", "right"),
            ("input tokens", "right"),
            ("output tokens", "right"),
            ("est. cost", "right"),
        ):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for c in p.calls:
            table.add_row(
                c.role,
                c.model,
                f"≤ {c.calls}",
                f"{c.input_tokens:,}",
                f"{c.output_tokens:,}",
                "unknown" if c.cost is None else f"${c.cost:.4f}",
            )
        out.print(table)
        total = (
            "unknown (a model's price is not known)"
            if p.total_cost is None
            else f"${p.total_cost:.4f}"
        )
        out.print(f"estimated cost: {total}; scored predictions: ≤ {p.metric_calls}")
        for n in p.notes:
            out.print(f"[dim]{n}[/]", highlight=False, soft_wrap=True)
        return

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} scored"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task(f"{s.optimization.optimizer}", total=None)

    def on_progress(ev: ProgressEvent) -> None:
        best = "" if ev.best_score is None else f" · best {ev.best_score:.1f}"
        progress.update(
            task,
            completed=ev.metric_calls,
            total=ev.planned_metric_calls or None,
            description=f"{s.optimization.optimizer} · {ev.candidates} candidate(s){best}",
        )

    try:
        with progress:
            res = run_optimize(s, name=name, on_progress=on_progress)
    except OptimizationInterrupted as e:
        r = e.result
        err.print("[yellow]interrupted.[/]", highlight=False)
        if r.program_path is not None:
            err.print(
                f"best program so far saved to {_rel(r.program_path)}; any completed "
                f"{program_file_name(r.name)} is unchanged",
                soft_wrap=True,
            )
        else:
            err.print("no candidate had been scored yet: no program saved", soft_wrap=True)
        if r.record_path is not None:
            err.print(f"run record: {_rel(r.record_path)}", soft_wrap=True)
        if r.record is not None and r.record.resume_hint:
            err.print(f"to resume: {r.record.resume_hint}", soft_wrap=True)
        raise typer.Exit(130) from None
    rec = res.record
    assert rec is not None
    for w in res.warnings:
        if w not in shown:
            _warn(w)
    if as_json:
        out.print_json(rec.model_dump_json())
        return
    if rec.trials:
        table = Table(title="candidates scored (score 0-100 on the selection set)")
        table.add_column("trial", justify="right")
        table.add_column("score", justify="right")
        table.add_column("scored", justify="right")
        table.add_column("best", justify="center")
        for t in rec.trials:
            table.add_row(
                str(t.index),
                f"{t.score:.1f}",
                str(t.scored),
                "[green]✓[/]" if t.best_so_far else "",
            )
        out.print(table)
    usage = Table(title="language models")
    for col in ("role", "model", "calls", "from cache", "tokens in", "tokens out", "cost"):
        usage.add_column(col)
    for u in rec.lm_usage:
        usage.add_row(
            u.role,
            u.model,
            str(u.calls),
            str(u.cached),
            f"{u.input_tokens:,}",
            f"{u.output_tokens:,}",
            "-" if u.cost is None else f"${u.cost:.4f}",
        )
    out.print(usage)
    out.print(
        f"[green]saved[/] {_rel(res.program_path)} ({rec.optimizer}, {rec.program} mode, "
        f"{rec.duration_s:.0f} s)",
        soft_wrap=True,
    )
    out.print(f"run record: {_rel(res.record_path)}", soft_wrap=True)
    out.print(f"next: ocdspy evaluate {res.name}", highlight=False)


@app.command()
@handle_errors
def evaluate(
    program: Annotated[
        str | None,
        typer.Argument(
            help="Program name or path (default: the newest in outputs/programs).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples for the confidence interval.", min=100)
    ] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Score the baseline and the optimized program on the validation split."""
    import os

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    os.environ.setdefault("TQDM_DISABLE", "1")
    from ocdspy.evaluate import errors_note
    from ocdspy.evaluate import evaluate as run_evaluate

    s = _load(config).settings
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(side: str, done: int, total: int) -> None:
        if side not in tasks:
            tasks[side] = progress.add_task(side, total=total)
        progress.update(tasks[side], completed=done)

    with progress:
        res = run_evaluate(s, program, resamples=resamples, on_progress=on_progress)
    err.print(f"program: {res.program_used}", highlight=False, soft_wrap=True)
    r = res.report
    if as_json:
        out.print_json(r.model_dump_json(exclude={"results"}))
        return
    d = r.difference
    table = Table(title=f"{r.name} on {r.examples_scored} held-out examples ({r.model})")
    for col, just in (
        ("", "left"),
        ("baseline", "right"),
        ("optimized", "right"),
        ("difference", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_row(
        "[bold]score[/]",
        _score_cell(r.baseline.score),
        _score_cell(r.optimized.score),
        f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]",
    )
    for c, v in r.components_difference.items():
        table.add_row(
            c,
            _score_cell(r.baseline.components[c]),
            _score_cell(r.optimized.components[c]),
            f"{v:+.1f}",
        )
    out.print(table)
    out.print(
        f"{int(d.confidence * 100)}% bootstrap interval over {d.unit}: "
        + ("excludes 0" if d.significant else "includes 0")
        + f" · improved {r.improved}, worse {r.worse}, unchanged {r.unchanged}"
    )
    note = errors_note(r.baseline, r.optimized, r.examples_scored)
    if note:
        _warn(note)
    for x in r.worse_examples[:5]:
        out.print(
            f"  [red]worse[/] {x.id}: expected {x.expected[:60]!r}, now "
            f"{x.optimized_output[:60]!r} ({x.delta:+.0f})",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"report: {_rel(res.markdown_path)} (and .json)", soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
