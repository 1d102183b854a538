"""The `ocdspy` command line: a thin shell over the stage functions.

Each command parses its options, calls one stage function and prints the result with the
printing helpers below, which the commands share. Results go to stdout, progress and errors to
stderr. Every expected failure is an `OcdspyError`, printed as one red line here (with a
traceback only under `--debug`).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Column, Table

from ocdspy import __version__
from ocdspy.display import printable, show_path
from ocdspy.errors import Interrupted, OcdspyError
from ocdspy.lm.providers import mask_keys
from ocdspy.progress import Step

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ocdspy.collect import CollectResult
    from ocdspy.config import LoadedSettings, Settings
    from ocdspy.convert import ConvertResult
    from ocdspy.evaluate import Report
    from ocdspy.export import ExportResult
    from ocdspy.optimize import OptimizationPlan, OptimizeResult
    from ocdspy.pipeline import PipelineResult
    from ocdspy.sessions.read import Problem
    from ocdspy.validate import ValidateReport

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

# Options shared by several commands. An option whose default is None means "not given" (the
# config file decides), and --help shows no default for it.
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: ./config.yaml when present).", dir_okay=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable report.")]
ProgramArg = Annotated[
    str | None,
    typer.Argument(help="Program name or path (default: the newest in outputs/programs)."),
]
AgentNameOpt = Annotated[str | None, typer.Option(help="Agent name (default: <model>-optimized).")]
TrackOpt = Annotated[
    bool,
    typer.Option("--track", help='Log the run to MLflow (pip install "ocdspy[track]").'),
]


def _track(track: bool) -> bool | None:
    """tracking.enabled from --track: on when given, else the config decides."""
    return True if track else None


def _force(help: str) -> Any:
    """--force: what it redoes or replaces differs per command, so each says it."""
    return typer.Option("--force", help=help)


def _require_success(help: str) -> Any:
    return typer.Option("--require-success/--allow-failures", help=help)


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
            # `_lines` masks keys: the last guard, no API key is ever printed.
            err.print(
                f"[bold red]error:[/] {_lines(e)}",
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


# ---------------------------------------------------------------------------------------------
# Printing helpers, shared by the commands


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


def _lines(error: OcdspyError) -> str:
    """An error's message and its detail lines, each masked and escaped to one line of its own."""
    return "\n  ".join(_text(mask_keys(line)) for line in (error.message, *error.details))


def _line(message: str) -> None:
    """One line of the result on stdout; a long one is left to the terminal to wrap."""
    out.print(message, soft_wrap=True)


def _problem(severity: str, file: str, where: str, message: str) -> None:
    """One input problem as `severity file: json.path: message` on stdout (part of the report)."""
    color = "red" if severity == "error" else "yellow"
    location = f"{_rel(file)}: {_text(where)}: " if where else f"{_rel(file)}: "
    out.print(f"[{color}]{severity}[/] {location}{_text(message)}", highlight=False, soft_wrap=True)


def _problems(problems: Iterable[Problem]) -> None:
    for problem in problems:
        _problem(problem.severity, problem.file, problem.where, problem.message)


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {_text(message)}", highlight=False, soft_wrap=True)


def _warn_all(warnings: Iterable[str], already_shown: set[str] | None = None) -> None:
    """Each warning once: those said before the stage ran (`already_shown`) are not repeated."""
    for warning in warnings:
        if warning not in (already_shown or set()):
            _warn(warning)


def _right(header: str) -> Column:
    """A table column of figures."""
    return Column(header, justify="right")


def _say_program(program_used: str) -> None:
    """Which program file a command read, and from what kind of run (on stderr)."""
    err.print(f"program: {program_used}", highlight=False, soft_wrap=True)


def _load(config: Path | None, overrides: dict[str, Any] | None = None) -> LoadedSettings:
    from ocdspy.config import load_settings

    loaded = load_settings(config, overrides=overrides)
    _warn_all(loaded.warnings)
    return loaded


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    return _load(config, overrides).settings


def _warn_teacher(settings: Settings) -> set[str]:
    """Say before any LM call that the optimizer needs a better teacher; returns what was said."""
    from ocdspy.optimizers import capable_teacher_warning

    warning = capable_teacher_warning(settings)
    if warning:
        _warn(warning)
    return {warning} if warning else set()


def _quiet_dspy_bars() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # DSPy's own bars would fight ours


class _Bars:
    """Progress on stderr, drawn for a `ocdspy.progress.Reporter`: the current stage, then one
    bar per part of its work with counts, elapsed time and time left. Transient: the bars are
    gone when the work ends. Nothing is drawn when stderr is not a terminal, or when `enabled`
    is false (`--json`); NO_COLOR drops the colours (Rich reads it), not the bars."""

    def __init__(self, *, console: Console | None = None, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = console or err
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not (enabled and console.is_terminal and not console.is_dumb_terminal),
        )
        self._stage = ""
        self._stage_line: TaskID | None = None  # the stage alone, until its first step
        self._tasks: dict[str, TaskID] = {}
        # Optimizers and evaluation report from their worker threads.
        self._lock = threading.Lock()

    def __enter__(self) -> _Bars:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def stage(self, name: str) -> None:
        """A new stage: the last one's bars, drawn once more with their final counts, go; the
        stage shows alone until its first step."""
        with self._lock:
            self._bars.refresh()
            self._clear()
            self._stage = name
            self._stage_line = self._bars.add_task(f"{_text(name)}…", total=None, count="")
            self._bars.refresh()

    def step(self, step: Step) -> None:
        label = _text(" · ".join(part for part in (self._stage, step.task, step.detail) if part))
        done = f"{step.done}/{step.total}" if step.total is not None else str(step.done)
        with self._lock:
            if self._stage_line is not None:
                self._bars.remove_task(self._stage_line)
                self._stage_line = None
            task = self._tasks.get(step.task)
            if task is None:
                task = self._tasks[step.task] = self._bars.add_task(
                    label, total=step.total, count=""
                )
            self._bars.update(
                task,
                completed=step.done,
                total=step.total,
                description=label,
                count=f"{done} {step.unit}".rstrip(),
            )

    def _clear(self) -> None:
        for task in [*self._tasks.values(), self._stage_line]:
            if task is not None:
                self._bars.remove_task(task)
        self._tasks, self._stage_line = {}, None


# ---------------------------------------------------------------------------------------------
# init / config


@app.command()
@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Project directory.")] = Path("."),
    force: Annotated[bool, _force("Overwrite existing files (a backup is kept).")] = False,
) -> None:
    """Scaffold a project: config.yaml, .env.example, data/ and outputs/ folders."""
    from ocdspy.scaffold import init_project

    result = init_project(directory, force=force)
    for name in result.created:
        out.print(f"[green]created[/]     {_rel(directory / name)}")
    for name in result.overwritten:
        out.print(f"[yellow]overwritten[/] {_rel(directory / name)}")
    for name in result.kept:
        out.print(f"[dim]kept[/]        {_rel(directory / name)}")
    if any(name in ("config.yaml", ".env.example") for name in result.kept):
        out.print("[dim]existing files were kept; use --force to replace them (with a backup)[/]")


@config_app.command("show")
@handle_errors
def config_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings and where each one came from."""
    from ocdspy.config import settings_as_rows

    loaded = _load(config)
    rows = settings_as_rows(loaded)
    if as_json:
        by_key = {key: {"value": value, "source": source} for key, value, source in rows}
        out.print_json(json.dumps(by_key))
        return
    table = Table(
        "setting",
        "value",
        Column("source", style="dim"),
        title=f"settings ({loaded.config_file or 'no config file'})",
    )
    for row in rows:
        table.add_row(*row)
    out.print(table)


# ---------------------------------------------------------------------------------------------
# validate


@app.command()
@handle_errors
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files, directories or glob patterns (default: data.raw_dir)."),
    ] = None,
    config: ConfigOpt = None,
    min_examples: Annotated[
        int | None, typer.Option(help="Fewest usable examples required.")
    ] = None,
    require_success: Annotated[
        bool | None, _require_success("Count only successful turns as usable.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check session logs: parse every file, report problems, check the data requirements."""
    import ocdspy.validate

    data = _settings(
        config, {"data.min_examples": min_examples, "data.require_success": require_success}
    ).data
    inputs = list(paths) if paths else [data.raw_dir]
    report = ocdspy.validate.validate(
        inputs, min_examples=data.min_examples, require_success=data.require_success
    )
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        # One directory in: name files relative to it, and say which directory in the title.
        _print_validation(report, inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None)
    raise typer.Exit(report.exit_code)


_FILE_STATUS = {
    "ok": "[green]ok[/]",
    "warnings": "[yellow]warnings[/]",
    "invalid": "[red]invalid[/]",
}


def _print_validation(report: ValidateReport, base: Path | None) -> None:
    if report.files:
        table = Table(
            Column("file", overflow="fold"),
            "format",
            _right("sessions"),
            _right("examples"),
            _right("successful"),
            _right("actions"),
            "status",
            title=f"session logs in {_rel(str(base))}" if base else "session logs",
        )
        for file in report.files:
            table.add_row(
                _rel(file.file, base),
                file.format,
                str(file.sessions),
                str(file.examples),
                str(file.successful),
                str(file.actions),
                _FILE_STATUS[file.status],
            )
        out.print(table)
    for problem in report.problems:
        _problem(problem.severity, problem.file, problem.path, problem.message)
    for check in report.requirements:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        out.print(f"{mark} {check.message}", highlight=False)
        if check.fix:
            out.print(f"  [yellow]fix:[/] {check.fix}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# convert / split


@app.command()
@handle_errors
def convert(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Inputs (default: data.raw_dir).")
    ] = None,
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default: data.processed_dir)."),
    ] = None,
    require_success: Annotated[bool | None, _require_success("Keep only successful turns.")] = None,
    result_max_chars: Annotated[
        int | None, typer.Option(help="Truncate tool results to this length.")
    ] = None,
    redact: Annotated[
        bool | None,
        typer.Option(
            "--redact/--no-redact", help="Replace secrets with placeholders (on by default)."
        ),
    ] = None,
    force: Annotated[bool, _force("Rebuild even if nothing changed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn session logs into examples.jsonl (one example per turn) and a manifest."""
    import ocdspy.convert

    data = _settings(
        config,
        {
            "data.processed_dir": out_dir,
            "data.require_success": require_success,
            "data.result_max_chars": result_max_chars,
            "data.redact": redact,
        },
    ).data
    if not data.redact:
        err.print(
            "[yellow]warning:[/] redaction is off: secrets in the logs will be written "
            "into examples and may reach a model or an exported prompt"
        )
    with err.status("converting sessions…"):
        result = ocdspy.convert.convert(
            list(paths) if paths else [data.raw_dir],
            data.processed_dir,
            require_success=data.require_success,
            result_max_chars=data.result_max_chars,
            redact=data.redact,
            force=force,
        )
    failed = sum(problem.severity == "error" for problem in result.problems)
    if as_json:
        summary = {"cached": result.cached, "examples": str(result.examples_path)}
        out.print_json(json.dumps({**summary, **result.manifest.model_dump(mode="json")}))
    else:
        _print_conversion(result, failed)
    # A file that could not be read fails the command (exit 1), after the others are converted.
    raise typer.Exit(1 if failed else 0)


def _print_conversion(result: ConvertResult, failed: int) -> None:
    _problems(result.problems)
    manifest = result.manifest
    if result.cached:
        out.print(
            f"inputs and settings unchanged: {_rel(str(result.examples_path))} is up to date "
            f"({manifest.examples_kept} examples); use --force to rebuild"
        )
        return
    out.print(
        f"read {manifest.sessions_read} sessions, {manifest.turns_in} turns "
        f"from {len(manifest.sources)} inputs"
    )
    out.print(
        f"[green]wrote {manifest.examples_kept} examples[/] to {_rel(str(result.examples_path))}"
    )
    for reason, count in manifest.dropped.items():
        out.print(f"  dropped {count}: {reason}")
    if manifest.redactions:
        kinds = ", ".join(f"{kind} {count}" for kind, count in manifest.redactions.items())
        out.print(f"  redacted {sum(manifest.redactions.values())} secrets ({kinds})")
    out.print(f"manifest: {_rel(str(result.manifest_path))}")
    if failed:
        err.print(
            f"[red]{failed} input problem(s)[/] (listed above); the other inputs were converted",
            highlight=False,
        )


@app.command()
@handle_errors
def split(
    config: ConfigOpt = None,
    examples: Annotated[
        Path | None,
        typer.Option(help="examples.jsonl (default: data.processed_dir/examples.jsonl)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: data.splits_dir).")
    ] = None,
    train_split: Annotated[
        float | None, typer.Option(help="Fraction of sessions to train on.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Split examples into train and validation sets, grouped by session."""
    import ocdspy.split
    from ocdspy.layout import Project

    overrides: dict[str, Any] = {"data.splits_dir": out_dir, "data.seed": seed}
    if train_split is not None:
        overrides["data.train_split"] = train_split
        overrides["data.val_split"] = round(1.0 - train_split, 10)
    settings = _settings(config, overrides)
    data = settings.data
    result = ocdspy.split.split(
        examples or Project(settings).examples,
        data.splits_dir,
        train_fraction=data.train_split,
        seed=data.seed,
    )
    manifest = result.manifest
    if as_json:
        out.print_json(manifest.model_dump_json())
        return
    for name, side, path in (
        ("train", manifest.train, result.train_path),
        ("val", manifest.val, result.val_path),
    ):
        _line(
            f"{name:5} {side.examples:4} examples from {side.sessions:3} sessions "
            f"({side.successful} successful, {side.failed} failed) -> {_rel(str(path))}"
        )
    out.print(f"manifest: {_rel(str(result.manifest_path))}")


# ---------------------------------------------------------------------------------------------
# collect


# Which store collect reads, and which of its sessions.
StoreDb = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="OpenCode database to read (default: found as OpenCode finds it).",
        exists=True,
        dir_okay=False,
    ),
]
StoreFolder = Annotated[
    Path | None,
    typer.Option(
        "--storage",
        help="Legacy OpenCode storage/ folder to read instead of a database.",
        exists=True,
        file_okay=False,
    ),
]


def _filter(flag: str, metavar: str, help: str, **checks: Any) -> Any:
    """One of collect's filters: which of the store's sessions to copy."""
    return typer.Option(flag, help=help, metavar=metavar, **checks)


ProjectFilter = Annotated[
    list[Path] | None,
    _filter("--project", "<dir>", "Only sessions run in this directory or below it (repeatable)."),
]
SinceFilter = Annotated[
    str | None,
    _filter(
        "--since", "<when>", "Only sessions updated since: 2026-01-31, 2026-01-31T14:00, 7d, 12h."
    ),
]
AgentFilter = Annotated[
    list[str] | None,
    _filter("--agent", "<name>", "Only sessions that used this agent (repeatable)."),
]
ModelFilter = Annotated[
    list[str] | None,
    _filter(
        "--model",
        "<name>",
        "Only sessions that used this model, provider/model or model (repeatable).",
    ),
]
SessionFilter = Annotated[
    list[str] | None,
    _filter("--session", "<id>", "Only this session and its sub-agent sessions (repeatable)."),
]
LimitFilter = Annotated[
    int | None,
    _filter("--limit", "<n>", "At most this many sessions, most recently updated first.", min=1),
]


@app.command()
@handle_errors
def collect(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write sessions (default: data.raw_dir).", file_okay=False
        ),
    ] = None,
    db: StoreDb = None,
    storage: StoreFolder = None,
    project: ProjectFilter = None,
    since: SinceFilter = None,
    agent: AgentFilter = None,
    model: ModelFilter = None,
    session: SessionFilter = None,
    limit: LimitFilter = None,
    force: Annotated[bool, _force("Rewrite sessions already collected and unchanged.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy sessions out of OpenCode's own store (read-only) into data.raw_dir."""
    import ocdspy.collect
    from ocdspy.progress import on_sessions

    raw_dir = _settings(config, {"data.raw_dir": out_dir}).data.raw_dir
    with _Bars(enabled=not as_json) as bars:
        bars.step(Step("collecting sessions", 0, None))
        result = ocdspy.collect.collect(
            raw_dir,
            db=db,
            storage=storage,
            project=project or (),
            since=since,
            agents=agent or (),
            models=model or (),
            sessions=session or (),
            limit=limit,
            force=force,
            on_progress=on_sessions(bars, "collecting sessions"),
        )
    if as_json:
        from ocdspy.validate import ProblemOut

        summary = result.model_dump(mode="json", exclude={"problems"})
        summary["problems"] = [ProblemOut.of(problem).model_dump() for problem in result.problems]
        out.print_json(json.dumps(summary))
        return
    _print_collection(result)


def _print_collection(result: CollectResult) -> None:
    _problems(result.problems)
    store = result.store
    out.print(
        f"store: {_rel(store.path)} ({store.format}, found via {store.found_by}); "
        f"{result.sessions_in_store} sessions",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"[green]collected {result.selected} sessions[/]: {len(result.written)} written, "
        f"{result.unchanged} unchanged, {result.empty} without messages "
        f"-> {_rel(result.out_dir)}",
        highlight=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------------------------------------
# export


@app.command()
@handle_errors
def export(
    program: ProgramArg = None,
    config: ConfigOpt = None,
    name: AgentNameOpt = None,
    install_to: Annotated[
        Path | None,
        typer.Option(
            "--install-to",
            help="Copy the agent into this OpenCode agent folder (e.g. ~/.config/opencode/agents).",
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
    force: Annotated[bool, _force("Replace an installed agent of that name (backed up).")] = False,
    plugin: Annotated[
        bool,
        typer.Option(
            help="Also write the ocdspy demo plugin and its pool (per-step demos in OpenCode); "
            "--install-to puts them into plugins/ beside the agent folder.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Write the optimized program as an OpenCode agent file (and its demo plugin), and
    optionally install them."""
    import ocdspy.export
    from ocdspy.evaluate import resolve_program

    if mode not in ("primary", "subagent", "all"):
        raise typer.BadParameter("must be primary, subagent or all", param_hint="--mode")
    settings = _settings(config)
    result = ocdspy.export.export_program(
        settings,
        resolve_program(settings, program),
        name=name,
        mode=mode,  # type: ignore[arg-type]
        install_to=install_to,
        set_default=set_default,
        force=force,
        plugin=plugin,
    )
    _say_program(result.program_used)
    _warn_all(result.warnings)
    if as_json:
        out.print_json(result.model_dump_json())
        return
    _print_export(result)


def _print_export(result: ExportResult) -> None:
    _line(
        f"[green]wrote[/] {_rel(str(result.agent_path))} (agent [bold]{result.name}[/], "
        f"{result.front_matter.mode})"
    )
    _line(f"provenance: {_rel(str(result.meta_path))}")
    if result.plugin_files:
        _line(f"[green]wrote[/] demo plugin {_rel(str(result.plugin_files[0]))} (and its pool)")
    shipped = result.shipped.get(result.installed_form)
    if shipped is not None:
        _line(
            f"score as it reaches the model ({result.installed_form} form): untuned "
            f"{shipped.baseline:.1f} -> {shipped.score:.1f} ({shipped.difference:+.1f}, 95% CI "
            f"{shipped.ci_low:+.1f} to {shipped.ci_high:+.1f})"
        )
    if result.installed_path:
        _line(f"[green]installed[/] {_rel(result.installed_path)}")
    for path in result.installed_plugin:
        _line(f"[green]installed[/] {_rel(path)}")
        if result.backup_path:
            _line(f"  previous version kept as {_rel(result.backup_path)}")
    if result.config_path:
        backup = f" (backup {_rel(result.config_backup.name)})" if result.config_backup else ""
        _line(f"default_agent set in {_rel(result.config_path)}{backup}")
    start = f"opencode --agent {result.name}"
    _line(
        f"use it: {start}"
        if result.installed_path
        else f"use it: ocdspy export --install-to ~/.config/opencode/agents, then {start}"
    )


# ---------------------------------------------------------------------------------------------
# pipeline


@app.command()
@handle_errors
def pipeline(
    config: ConfigOpt = None,
    optimizer: Annotated[str | None, typer.Option(help="Override optimization.optimizer.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default: <program>-<optimizer>).")
    ] = None,
    agent_name: AgentNameOpt = None,
    install_to: Annotated[
        Path | None,
        typer.Option(
            "--install-to", help="Also install the agent into this OpenCode agent folder."
        ),
    ] = None,
    set_default: Annotated[
        bool, typer.Option("--set-default", help="Make it OpenCode's default agent.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an installed agent of that name (backed up)."),
    ] = False,
    force: Annotated[bool, _force("Redo every stage.")] = False,
    track: TrackOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run validate → convert → split → optimize → evaluate → export, skipping what is current."""
    _quiet_dspy_bars()
    import ocdspy.pipeline

    settings = _settings(
        config, {"optimization.optimizer": optimizer, "tracking.enabled": _track(track)}
    )
    shown = _warn_teacher(settings)
    with _Bars() as bars:
        result = ocdspy.pipeline.run_pipeline(
            settings,
            name=name,
            force=force,
            install_to=install_to,
            set_default=set_default,
            overwrite=overwrite,
            agent_name=agent_name,
            progress=bars,
        )
    if as_json:
        out.print_json(result.model_dump_json())
        return
    _print_pipeline(result, shown)


def _print_pipeline(result: PipelineResult, shown: set[str]) -> None:
    table = Table(
        *(Column(header, overflow="fold") for header in ("stage", "status", "seconds", "detail")),
        title="pipeline",
    )
    for stage in result.stages:
        table.add_row(stage.stage, stage.status, f"{stage.seconds:.1f}", _rel(stage.detail))
    out.print(table)
    _warn_all(result.warnings, shown)
    _line(
        f"data: {result.sessions} sessions -> {result.examples} examples "
        f"(train {result.train_examples} from {result.train_sessions} sessions, "
        f"val {result.val_examples} from {result.val_sessions})"
    )
    if result.baseline_score is not None and result.optimized_score is not None:
        gain = result.optimized_score - result.baseline_score
        ci = (
            f", 95% CI {result.ci_low:+.1f} to {result.ci_high:+.1f}"
            if result.ci_low is not None and result.ci_high is not None
            else ""
        )
        _line(
            f"program score on held-out sessions ({result.optimizer}): baseline "
            f"{result.baseline_score:.1f} -> optimized {result.optimized_score:.1f} "
            f"({gain:+.1f}{ci})"
        )
    for form, shipped in result.shipped.items():
        installed = " (installed)" if form == result.installed_form else ""
        _line(
            f"agent file as it reaches the model, {form} form{installed}: untuned "
            f"{shipped.baseline:.1f} -> {shipped.score:.1f} ({shipped.difference:+.1f}, 95% CI "
            f"{shipped.ci_low:+.1f} to {shipped.ci_high:+.1f})"
        )
    cost = f", cost ${result.lm_cost:.4f}" if result.lm_cost else ""
    out.print(f"LM calls this run: {result.lm_calls} ({result.lm_new_calls} not from cache){cost}")
    if result.report_path:
        from ocdspy.layout import ReportFiles

        _line(f"report: {_rel(str(ReportFiles.beside(result.report_path).markdown_path))}")
    if result.agent_path:
        _print_agent_start(result)
    out.print(f"done in {result.seconds:.0f} s")


def _print_agent_start(result: PipelineResult) -> None:
    _line(f"agent: {_rel(str(result.agent_path))}")
    start = f"`opencode --agent {result.agent_name}`"
    if result.installed_path:
        _line(f"installed: {_rel(result.installed_path)}; start it with {start}")
    else:
        _line(f"use it: ocdspy export --install-to ~/.config/opencode/agents, then {start}")


# ---------------------------------------------------------------------------------------------
# optimize / evaluate


def _score_cell(score: float | None) -> str:
    return "-" if score is None else f"{score:.1f}"


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
            "GEPA or SIMBA."
        ),
    ] = None,
    auto: Annotated[
        str | None,
        typer.Option(help="Budget preset: light, medium, heavy, or none (use --trials)."),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            help="Trials (MIPROv2, random search) or full evaluations (GEPA) when --auto is none.",
            min=1,
        ),
    ] = None,
    program: Annotated[str | None, typer.Option(help="Program mode: plan or next_action.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Custom metric as package.module:function.")
    ] = None,
    num_threads: Annotated[int | None, typer.Option(help="Parallel LM calls.", min=1)] = None,
    name: Annotated[
        str | None, typer.Option(help="Program name (default: <program>-<optimizer>).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the planned LM calls and cost, then stop.")
    ] = False,
    track: TrackOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Optimize the agent program on the training split; save it and a run record."""
    _quiet_dspy_bars()
    settings = _settings(
        config,
        {
            "tracking.enabled": _track(track),
            "optimization.optimizer": optimizer,
            "optimization.num_trials": trials,
            "optimization.program": program,
            "optimization.metric": metric,
            "optimization.num_threads": num_threads,
            "optimization.auto_mode": _auto_mode_flag(auto, trials),
        },
    )
    shown = _warn_teacher(settings)
    if dry_run:
        _plan_only(settings, name, shown, as_json)
        return
    result = _optimize_with_bars(settings, name)
    _warn_all(result.warnings, shown)
    if as_json:
        assert result.record is not None
        out.print_json(result.record.model_dump_json())
        return
    _print_optimized(result)


def _plan_only(settings: Settings, name: str | None, shown: set[str], as_json: bool) -> None:
    import ocdspy.optimize

    result = ocdspy.optimize.optimize(settings, name=name, dry_run=True)
    if as_json:
        out.print_json(result.plan.model_dump_json())
        return
    _warn_all(result.warnings, shown)
    _print_plan(result.plan)


def _print_plan(plan: OptimizationPlan) -> None:
    table = Table(
        "role",
        "model",
        _right("LM calls"),
        _right("input tokens"),
        _right("output tokens"),
        _right("est. cost"),
        title=f"{plan.optimizer} on {plan.train_examples} training examples "
        f"({plan.program} mode) — planned, not run",
    )
    for call in plan.calls:
        table.add_row(
            call.role,
            call.model,
            f"≤ {call.calls}",
            f"{call.input_tokens:,}",
            f"{call.output_tokens:,}",
            "unknown" if call.cost is None else f"${call.cost:.4f}",
        )
    out.print(table)
    total = (
        "unknown (a model's price is not known)"
        if plan.total_cost is None
        else f"${plan.total_cost:.4f}"
    )
    out.print(f"estimated cost: {total}; scored predictions: ≤ {plan.metric_calls}")
    for note in plan.notes:
        out.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)


def _optimize_with_bars(settings: Settings, name: str | None) -> OptimizeResult:
    """Run the optimizer with its trials shown as they score; Ctrl-C says what was kept."""
    import ocdspy.optimize
    from ocdspy.progress import on_trials

    optimizer = settings.optimization.optimizer
    try:
        with _Bars() as bars:
            bars.step(Step(optimizer, 0, None, unit="scored"))
            return ocdspy.optimize.optimize(
                settings, name=name, on_progress=on_trials(bars, optimizer)
            )
    except ocdspy.optimize.OptimizationInterrupted as e:
        _print_interrupted(e.result)
        raise typer.Exit(130) from None


def _print_interrupted(result: OptimizeResult) -> None:
    from ocdspy.layout import program_file_name

    err.print("[yellow]interrupted.[/]", highlight=False)
    if result.program_path is not None:
        err.print(
            f"best program so far saved to {_rel(result.program_path)}; any completed "
            f"{program_file_name(result.name)} is unchanged",
            soft_wrap=True,
        )
    else:
        err.print("no candidate had been scored yet: no program saved", soft_wrap=True)
    if result.record_path is not None:
        err.print(f"run record: {_rel(result.record_path)}", soft_wrap=True)
    if result.record is not None and result.record.resume_hint:
        err.print(f"to resume: {result.record.resume_hint}", soft_wrap=True)


def _print_optimized(result: OptimizeResult) -> None:
    record = result.record
    assert record is not None
    if record.trials:
        trials = Table(
            _right("trial"),
            _right("score"),
            _right("scored"),
            Column("best", justify="center"),
            title="candidates scored (score 0-100 on the selection set)",
        )
        for trial in record.trials:
            best = "[green]✓[/]" if trial.best_so_far else ""
            trials.add_row(str(trial.index), f"{trial.score:.1f}", str(trial.scored), best)
        out.print(trials)
    usage = Table(
        "role", "model", "calls", "from cache", "tokens in", "tokens out", "cost",
        title="language models",
    )  # fmt: skip
    for lm in record.lm_usage:
        usage.add_row(
            lm.role,
            lm.model,
            str(lm.calls),
            str(lm.cached),
            f"{lm.input_tokens:,}",
            f"{lm.output_tokens:,}",
            "-" if lm.cost is None else f"${lm.cost:.4f}",
        )
    out.print(usage)
    _line(
        f"[green]saved[/] {_rel(result.program_path)} ({record.optimizer}, {record.program} "
        f"mode, {record.duration_s:.0f} s)"
    )
    _line(f"run record: {_rel(result.record_path)}")
    out.print(f"next: ocdspy evaluate {result.name}", highlight=False)


@app.command()
@handle_errors
def evaluate(
    program: ProgramArg = None,
    config: ConfigOpt = None,
    resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples for the confidence interval.", min=100)
    ] = 2000,
    agent: Annotated[
        list[Path] | None,
        typer.Option(
            "--agent",
            help="Score this OpenCode agent file as it reaches the model (repeatable), "
            "instead of a program.",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="With --agent: the agent file to compare against (default: untuned)."),
    ] = None,
    pool: Annotated[
        Path | None,
        typer.Option(
            help="With --agent: also show the demos the ocdspy plugin picks from this pool."
        ),
    ] = None,
    track: TrackOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score the baseline and the optimized program on the validation split, or (with --agent)
    any OpenCode agent files against a baseline agent."""
    _quiet_dspy_bars()
    import ocdspy.evaluate
    from ocdspy.progress import on_examples

    settings = _settings(config, {"tracking.enabled": _track(track)})
    if agent:
        _evaluate_agents(settings, agent, baseline, pool, as_json)
        return
    with _Bars() as bars:
        result = ocdspy.evaluate.evaluate(
            settings, program, resamples=resamples, on_progress=on_examples(bars)
        )
    _say_program(result.program_used)
    if as_json:
        out.print_json(result.report.model_dump_json(exclude={"results"}))
        return
    _print_report(result.report)
    _line(f"report: {_rel(result.markdown_path)} (and .json)")


def _evaluate_agents(
    settings: Settings, agents: list[Path], baseline: Path | None, pool: Path | None, as_json: bool
) -> None:
    from ocdspy.agents import score_agents
    from ocdspy.progress import on_examples

    with _Bars() as bars:
        result = score_agents(
            settings, agents, baseline=baseline, pool=pool, on_step=on_examples(bars)
        )
    report = result.report
    if as_json:
        out.print_json(report.model_dump_json())
        return
    table = Table(
        "agent",
        "form",
        _right("score"),
        _right("errors"),
        _right("difference [95% CI]"),
        title=f"agent files on {report.steps} held-out steps ({report.model})",
    )
    for entry in (report.baseline, *report.agents):
        d = entry.difference
        diff = "baseline" if d is None else f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"
        table.add_row(
            _text(entry.name), entry.form, _score_cell(entry.score), f"{entry.errors}", diff
        )
    out.print(table)
    _line(f"report: {_rel(result.markdown_path)} (and .json)")


def _print_report(report: Report) -> None:
    from ocdspy.evaluate import errors_note

    difference = report.difference
    table = Table(
        "",
        _right("baseline"),
        _right("optimized"),
        _right("difference"),
        title=f"{report.name} on {report.examples_scored} held-out examples ({report.model})",
    )
    table.add_row(
        "[bold]score[/]",
        _score_cell(report.baseline.score),
        _score_cell(report.optimized.score),
        f"{difference.mean:+.1f} [{difference.ci_low:+.1f}, {difference.ci_high:+.1f}]",
    )
    for component, change in report.components_difference.items():
        table.add_row(
            component,
            _score_cell(report.baseline.components[component]),
            _score_cell(report.optimized.components[component]),
            f"{change:+.1f}",
        )
    out.print(table)
    out.print(
        f"{int(difference.confidence * 100)}% bootstrap interval over {difference.unit}: "
        + ("excludes 0" if difference.significant else "includes 0")
        + f" · improved {report.improved}, worse {report.worse}, unchanged {report.unchanged}"
    )
    note = errors_note(report.baseline, report.optimized, report.examples_scored)
    if note:
        _warn(note)
    for example in report.worse_examples[:5]:
        out.print(
            f"  [red]worse[/] {example.id}: expected {example.expected[:60]!r}, now "
            f"{example.optimized_output[:60]!r} ({example.delta:+.0f})",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
@handle_errors
def serve(
    model_path: Annotated[
        Path | None,
        typer.Option(
            "--model-path", help="GGUF to serve (default: the built-in model).", dir_okay=False
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).", min=0, max=65535)] = 8080,
    ctx: Annotated[
        int | None, typer.Option("--ctx", help="Context size in tokens (default 8192).", min=256)
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="llama.cpp threads (default: half the cores).", min=1)
    ] = None,
    queue: Annotated[
        int, typer.Option(help="Requests that may wait for the model; more get HTTP 429.", min=0)
    ] = 4,
    max_tokens: Annotated[
        int, typer.Option(help="A reply's token budget (a request may ask for less).", min=16)
    ] = 256,
) -> None:
    """Serve the built-in model (or a GGUF) as an OpenAI-compatible endpoint OpenCode can drive."""
    from ocdspy.serve import serving

    def show(entry: Any) -> None:
        err.print(entry.summary(), highlight=False, markup=False, soft_wrap=True)

    try:
        with serving(
            model_path,
            host,
            port,
            ctx,
            n_threads=threads,
            queue=queue,
            reply_tokens=max_tokens,
            on_request=show,
        ) as srv:
            out.print(
                f"serving {srv.model_id} ({srv.n_ctx} tokens of context) at {srv.base_url}\n"
                "add to opencode.json:",
                highlight=False,
            )
            out.print(srv.snippet(), highlight=False, markup=False, soft_wrap=True)
            out.print(f"then: opencode --model {srv.opencode_model} · Ctrl-C stops the server")
            srv.wait()
    except KeyboardInterrupt:
        raise Interrupted("the server stopped") from None


@app.command()
@handle_errors
def replay(
    config: ConfigOpt = None,
    agent: Annotated[
        list[Path] | None,
        typer.Option("--agent", help="Agent file to replay (repeatable).", dir_okay=False),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Agent file to compare against (default: untuned).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="provider/model of your OpenCode config (default: ocdspy serve)."),
    ] = None,
    opencode_config: Annotated[
        Path | None,
        typer.Option(help="OpenCode config to take --model's provider from.", dir_okay=False),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Replay at most N turns.", min=1)] = None,
    verify: Annotated[
        str | None, typer.Option(help='Command run in the workspace after each run ("pytest -q").')
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before a run is killed.", min=1)] = 300,
    max_steps: Annotated[
        int | None, typer.Option(help="Step cap (default: the agent's steps, else 25).", min=1)
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(help="Folder to copy when a snapshot is missing.", file_okay=False),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Git revision (of this folder's repo) when one is missing.")
    ] = None,
    opencode: Annotated[
        Path | None, typer.Option(help="The opencode binary (default: from PATH).", dir_okay=False)
    ] = None,
    db: StoreDb = None,
    storage: StoreFolder = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the held-out turns in real OpenCode (baseline and each agent) and score what
    happened. Your checkout, OpenCode store and config are never written."""
    from ocdspy.replay import replay as run_replay

    def say(line: str) -> None:
        if not as_json:
            err.print(_text(line), highlight=False, soft_wrap=True)

    result = run_replay(
        _settings(config),
        agents=agent or (),
        baseline=baseline,
        model=model,
        opencode_config=opencode_config,
        limit=limit,
        verify=verify,
        timeout=timeout,
        max_steps=max_steps,
        workspace=workspace,
        revision=revision,
        opencode=opencode,
        db=db,
        storage=storage,
        say=say,
    )
    report = result.report
    if as_json:
        out.print_json(report.model_dump_json())
        return
    table = Table(
        "agent",
        _right("score"),
        _right("files F1"),
        "ok/error/loop/step-cap/timeout",
        _right("difference [95% CI]"),
        title=f"replay of {len(report.turns)} held-out turns ({report.model})",
    )
    for entry in (report.baseline, *report.agents):
        d = entry.difference
        diff = "-" if d is None else f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"
        statuses = "/".join(
            str(entry.statuses.get(s, 0)) for s in ("ok", "error", "loop", "step-cap", "timeout")
        )
        table.add_row(
            _text(entry.name),
            _score_cell(entry.score),
            f"{entry.files_f1:.0f}",
            statuses,
            "baseline" if entry is report.baseline else diff,
        )
    out.print(table)
    _line(f"runs: {result.ran} run, {result.reused} reused from {_rel(result.state_path)}")
    _line(f"report: {_rel(result.markdown_path)} (and .json)")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
