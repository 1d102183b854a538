"""Trajectories of the bench corpus: task templates x parameters (see record_corpus.py).

Every template writes what a competent agent would do in the project's real state: a bug is
injected (and committed) before a bug-fix session, so the first test run really fails; after an
edit the agent runs the project's own test command; a failing command is followed by the right
one. Each bash call carries whether it is expected to succeed; the recorder checks that against
the exit codes OpenCode recorded.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from corpus_projects import Bug, Feature, Func, LintBug, Project
from tests.opencode_support.fake_openai import Step, ToolCall, call, error, hang, text, tools


@dataclass
class Turn:
    message: str
    steps: list[Step]
    outcome: str = "ok"  # ok | api-error | aborted


@dataclass
class Session:
    project: str
    kind: str
    variant: str
    title: str
    turns: list[Turn]
    setup: dict[str, str] = field(default_factory=dict)  # rel path -> content, committed
    setup_message: str = ""
    expect: list[tuple[str, bool]] = field(default_factory=list)  # (bash command, succeeds)
    subagent: dict[str, list[Step]] = field(default_factory=dict)  # prompt -> child steps


class Traj:
    """Builds one turn's steps; knows the project root and the session's bash style."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.steps: list[Step] = []

    def p(self, rel: str) -> str:
        return str(self.ctx.root / rel) if rel else str(self.ctx.root)

    def add(self, *calls: ToolCall, say: str = "") -> Traj:
        self.steps.append(tools(*calls, text=say))
        return self

    def read_call(self, rel: str, **kw: int) -> ToolCall:
        return call("read", filePath=self.p(rel), **kw)

    def read(self, *rels: str, say: str = "", **kw: int) -> Traj:
        return self.add(*(self.read_call(r, **kw) for r in rels), say=say)

    def edit_call(self, rel: str, old: str, new: str, replace_all: bool = False) -> ToolCall:
        args: dict = {"filePath": self.p(rel), "oldString": old, "newString": new}
        if replace_all:
            args["replaceAll"] = True
        return call("edit", **args)

    def edit(self, rel: str, old: str, new: str, say: str = "") -> Traj:
        return self.add(self.edit_call(rel, old, new), say=say)

    def write(self, rel: str, content: str, say: str = "") -> Traj:
        return self.add(call("write", filePath=self.p(rel), content=content), say=say)

    def bash(self, command: str, ok: bool, description: str, say: str = "") -> Traj:
        return self.add(self.ctx.bash_call(command, ok, description), say=say)

    def test(self, ok: bool, say: str = "", one: str | None = None) -> Traj:
        pr = self.ctx.project
        cmd = pr.test_one.format(file=one) if one else pr.test_cmd
        return self.bash(cmd, ok, "Run the tests" if not one else f"Run {one}", say=say)

    def grep(self, pattern: str, include: str | None = None, sub: str = "") -> Traj:
        args: dict = {"pattern": pattern}
        if include:
            args["include"] = include
        if sub:
            args["path"] = self.p(sub)
        return self.add(call("grep", **args))

    def glob(self, pattern: str) -> Traj:
        return self.add(call("glob", pattern=pattern))

    def todo(self, items: list[str], done: int) -> Traj:
        todos = [
            {
                "content": item,
                "status": "completed" if i < done else "in_progress" if i == done else "pending",
                "priority": "high" if i == 0 else "medium",
            }
            for i, item in enumerate(items)
        ]
        return self.add(call("todowrite", todos=todos))

    def say(self, answer: str) -> list[Step]:
        self.steps.append(text(answer))
        return self.steps

    def fail(self, message: str) -> list[Step]:
        self.steps.append(error(400, message))
        return self.steps

    def interrupt(self) -> list[Step]:
        self.steps.append(hang(30))
        return self.steps


@dataclass
class Ctx:
    project: Project
    root: Path
    rng: random.Random
    style: str = "plain"  # plain | cd | workdir: how this session calls bash
    expect: list[tuple[str, bool]] = field(default_factory=list)

    def bash_call(self, command: str, ok: bool, description: str) -> ToolCall:
        args: dict = {"command": command, "description": description}
        if self.style == "cd" and not command.startswith(("git ", "ls")):
            args["command"] = f"cd {self.root} && {command}"
        elif self.style == "workdir":
            args["workdir"] = str(self.root)
        self.expect.append((args["command"], ok))
        return call("bash", **args)

    def pick(self, options: list[str]) -> str:
        return self.rng.choice(options)


# --------------------------------------------------------------------------- helpers


def apply(files: dict[str, str], rel: str, old: str, new: str) -> dict[str, str]:
    """``files`` with the one occurrence of ``old`` in ``rel`` replaced by ``new``."""
    content = files[rel]
    if content.count(old) != 1:
        raise ValueError(f"{rel}: expected one occurrence of {old!r}, found {content.count(old)}")
    return {**files, rel: content.replace(old, new)}


def occurrences(files: dict[str, str], word: str, suffixes: tuple[str, ...]) -> list[str]:
    """Code files (by suffix) that contain ``word``, sorted."""
    return sorted(r for r, c in files.items() if r.endswith(suffixes) and word in c)


def grep_lines(files: dict[str, str], pattern: str, rels: list[str] | None = None) -> list[str]:
    """``file:line: text`` for every line matching ``pattern``, as grep would list them."""
    rx = re.compile(pattern)
    out = []
    for rel in sorted(rels or files):
        for n, line in enumerate(files[rel].splitlines(), 1):
            if rx.search(line):
                out.append(f"{rel}:{n}: {line.strip()}")
    return out


def def_pattern(project: Project, name: str) -> str:
    if project.include == "*.py":
        return rf"def {name}\("
    if project.include == "*.js":
        return rf"function {name}\("
    return rf"^{name}\(\)"


def bug_file(project: Project, bug: Bug) -> str:
    return project.func(bug.func).file


def bug_setup(project: Project, bug: Bug) -> dict[str, str]:
    rel = bug_file(project, bug)
    return {rel: apply(project.files, rel, bug.good, bug.bad)[rel]}


def ext_of(project: Project) -> tuple[str, ...]:
    return {"*.py": (".py",), "*.js": (".js",), "*.sh": (".sh",)}[project.include]


SUFFIX_WORDS = {"*.py": "Python", "*.js": "JavaScript", "*.sh": "shell"}


# --------------------------------------------------------------------------- bug fixes


def fix_steps(ctx: Ctx, bug: Bug, variant: str) -> Traj:
    """The steps of a bug fix up to (not including) the final answer."""
    pr, t = ctx.project, Traj(ctx)
    rel, f = bug_file(pr, bug), pr.func(bug.func)
    why = f"The bug: {bug.cause}."
    if variant == "read-first":
        t.read(rel).edit(rel, bug.bad, bug.good, say=why).test(True)
    elif variant == "grep-first":
        t.grep(def_pattern(pr, bug.func), include=pr.include).read(rel)
        t.edit(rel, bug.bad, bug.good, say=why).test(True)
    elif variant == "read-test-first":
        t.test(False, say="Let me see what fails first.").read(f.test_file, rel)
        t.edit(rel, bug.bad, bug.good, say=why).test(True, one=f.test_file).test(True)
    elif variant == "bad-edit":
        wrong = bug.bad.replace("(", "( ", 1) if "(" in bug.bad else bug.bad + "  "
        t.test(False).read(rel).edit(rel, wrong, bug.good)
        n = (
            pr.files[rel]
            .splitlines()
            .index(
                next(line for line in pr.files[rel].splitlines() if bug.good.split("\n")[0] in line)
            )
        )
        t.read(rel, offset=max(1, n - 3), limit=12)
        t.edit(rel, bug.bad, bug.good, say=why).test(True)
    else:  # test-first
        t.test(False).read(rel).edit(rel, bug.bad, bug.good, say=why).test(True)
    return t


BUG_ASKS = [
    "{symptom}. Can you fix it?",
    "The tests are failing: {symptom}. Please fix `{func}` in {file}.",
    "Bug report from a user: {symptom}. Find the cause in {file}, fix it and run the tests.",
    "`{func}` is broken: {symptom}. Fix it and make sure the test suite passes.",
    "Please look into this: {symptom}. I think it is in {file}.",
]


def fix_bug(ctx: Ctx, bug: Bug, variant: str) -> Session:
    pr = ctx.project
    rel = bug_file(pr, bug)
    ask = ctx.pick(BUG_ASKS).format(symptom=bug.symptom, func=bug.func, file=rel)
    ask = ask[0].upper() + ask[1:]
    t = fix_steps(ctx, bug, variant)
    steps = t.say(f"Fixed `{bug.func}` in {rel}: {bug.cause}. The tests pass now.")
    return Session(
        pr.name,
        "fix-bug",
        variant,
        f"Fix {bug.func} bug",
        [Turn(ask, steps)],
        setup=bug_setup(pr, bug),
        setup_message=f"Tidy up {bug.func}",
    )


# --------------------------------------------------------------------------- tests, features


def new_test_path(pr: Project, f: Func) -> str:
    if pr.include == "*.js":
        return f"test/{f.name}.edge.test.js"
    suffix = ".py" if pr.include == "*.py" else ".sh"
    return f"{pr.test_dir}/test_{f.name.lower()}_edge{suffix}"


def add_test(ctx: Ctx, f: Func, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    path = new_test_path(pr, f)
    ask = ctx.pick(
        [
            f"Add a test for the edge cases of `{f.name}` in {f.file}.",
            f"`{f.name}` has no edge-case tests. Write some in a new file.",
            f"Please add a unit test covering `{f.name}`.",
        ]
    )
    if variant == "with-existing":
        t.read(f.file, f.test_file)
    else:
        t.read(f.file)
    t.write(path, f.new_test).test(True, one=path if pr.include != "*.sh" else None)
    if variant == "with-existing" and pr.include != "*.sh":
        t.test(True)
    steps = t.say(f"Added {path} with an edge-case test for `{f.name}`; it passes.")
    return Session(pr.name, "add-test", variant, f"Add tests for {f.name}", [Turn(ask, steps)])


def feature_steps(ctx: Ctx, feat: Feature, variant: str) -> Traj:
    t = Traj(ctx)
    plan = ["Implement the change", "Add a test", "Run the test suite"]
    if variant == "todo":
        t.todo(plan, 0)
    if variant == "test-first":
        t.write(feat.test_file, feat.test, say="I'll write the test first.").test(False)
    t.read(feat.file).edit(feat.file, feat.anchor, feat.new_text)
    if variant != "test-first":
        if variant == "todo":
            t.todo(plan, 1)
        t.write(feat.test_file, feat.test)
    t.test(True)
    if variant == "todo":
        t.todo(plan, 3)
    return t


def feature(ctx: Ctx, feat: Feature, variant: str) -> Session:
    pr = ctx.project
    steps = feature_steps(ctx, feat, variant).say(feat.done)
    title = "Add " + feat.ask.split("`")[1] if "`" in feat.ask else "Add feature"
    return Session(pr.name, "feature", variant, title, [Turn(feat.ask, steps)])


# --------------------------------------------------------------------------- renames


def rename_files(pr: Project, old: str) -> list[str]:
    return occurrences(pr.files, old, (*ext_of(pr), "Makefile"))


def rename(ctx: Ctx, old: str, new: str, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    rels = rename_files(pr, old)
    ask = ctx.pick(
        [
            f"Rename `{old}` to `{new}` everywhere in the code base.",
            f"`{old}` is a confusing name. Please call it `{new}` instead, including the tests.",
        ]
    )
    t.grep(old, include=pr.include)
    t.read(*rels)
    if variant == "parallel":
        t.add(*(t.edit_call(r, old, new, replace_all=True) for r in rels))
    else:
        for r in rels:
            t.add(t.edit_call(r, old, new, replace_all=True))
    t.test(True).grep(old, include=pr.include)
    steps = t.say(
        f"Renamed `{old}` to `{new}` in {len(rels)} files ({', '.join(rels)}); no references "
        "to the old name are left and the tests pass."
    )
    return Session(pr.name, "rename", variant, f"Rename {old} to {new}", [Turn(ask, steps)])


# --------------------------------------------------------------------------- read-only tasks


def explain(ctx: Ctx, f: Func, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    ask = ctx.pick(
        [
            f"How does `{f.name}` work?",
            f"Explain what `{f.name}` in {f.file} does.",
            f"Can you walk me through `{f.name}`? I want to understand it before changing it.",
        ]
    )
    if variant == "grep":
        hits = grep_lines(pr.files, def_pattern(pr, f.name), [f.file])
        line = int(hits[0].split(":")[1]) if hits else 1
        t.grep(def_pattern(pr, f.name), include=pr.include).read(
            f.file, offset=max(1, line - 1), limit=20
        )
    elif variant == "with-test":
        t.read(f.file, f.test_file)
    else:
        t.read(f.file)
    answer = f"`{f.name}` ({f.file}) {f.summary}."
    if variant == "with-test":
        answer += f" Its behaviour is pinned down by {f.test_file}."
    return Session(pr.name, "explain", variant, f"Explain {f.name}", [Turn(ask, t.say(answer))])


def search(ctx: Ctx, variant: str, name: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    if variant == "todos":
        ask = "Find all the TODO comments in the project."
        hits = grep_lines(pr.files, "TODO")
        t.grep("TODO")
    elif variant == "definition":
        ask = f"Where is `{name}` defined?"
        hits = grep_lines(pr.files, def_pattern(pr, name))
        t.grep(def_pattern(pr, name), include=pr.include)
    elif variant == "tests-for":
        ask = f"Which tests exercise `{name}`?"
        hits = grep_lines(pr.files, re.escape(name), [r for r in pr.files if "test" in r])
        t.glob(f"{pr.test_dir}/**").grep(name, sub=pr.test_dir)
    else:  # usages
        ask = f"Where is `{name}` used? List every file."
        hits = grep_lines(pr.files, re.escape(name), occurrences(pr.files, name, ext_of(pr)))
        t.grep(name, include=pr.include)
        first = hits[0].split(":")[0] if hits else ""
        if first and ctx.rng.random() < 0.5:
            t.read(first, offset=1, limit=30)
    body = "\n".join(f"- {h}" for h in hits) or "- no matches"
    answer = f"Found {len(hits)} match{'es' if len(hits) != 1 else ''}:\n{body}"
    return Session(pr.name, "search", variant, ask.rstrip("?.")[:50], [Turn(ask, t.say(answer))])


def list_files(ctx: Ctx, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    sub = pr.test_dir if variant != "glob-source" else ""
    if variant == "glob-source":
        ask = f"List the {SUFFIX_WORDS[pr.include]} source files of this project."
        rels = sorted(r for r in pr.files if r.endswith(ext_of(pr)))
        t.glob(pr.source_glob)
    elif variant == "ls":
        ask = f"What files are in {sub}/?"
        rels = sorted(r for r in pr.files if r.startswith(sub + "/"))
        t.bash(f"ls -la {sub}", True, f"List {sub}")
    else:  # read-dir
        ask = f"Show me what is in the {sub} folder."
        rels = sorted(r for r in pr.files if r.startswith(sub + "/"))
        t.read(sub)
    answer = "\n".join(f"- {r}" for r in rels)
    return Session(
        pr.name,
        "list-files",
        variant,
        f"List {sub or 'source'} files",
        [Turn(ask, t.say(f"{len(rels)} files:\n{answer}"))],
    )


# --------------------------------------------------------------------------- commands


RUN_ANSWERS = {
    "ledger": "4 transactions, total $944.80: books $24.00, food $20.80, rent $900.00.",
    "tally": "count 5, sum 20.00, mean 4.00, median 3.20.",
    "relkit": "It prints 1.5.0.",
}


def run_app(ctx: Ctx, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    if variant == "wrong-then-right":
        t.bash(pr.wrong_run_cmd, False, "Run the program")
    t.bash(pr.run_cmd, True, "Run the program")
    return Session(
        pr.name, "run", variant, "Run the program", [Turn(pr.run_ask, t.say(RUN_ANSWERS[pr.name]))]
    )


def run_tests(ctx: Ctx, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    ask = ctx.pick(["Do the tests pass?", "Run the test suite and tell me the result."])
    if variant == "wrong-then-right":
        t.bash(pr.wrong_test_cmd, False, "Run the tests")
    t.test(True)
    steps = t.say(f"All tests pass (`{pr.test_cmd}`).")
    return Session(pr.name, "run-tests", variant, "Run the tests", [Turn(ask, steps)])


def diagnose(ctx: Ctx, bug: Bug) -> Session:
    pr, t = ctx.project, Traj(ctx)
    rel, f = bug_file(pr, bug), pr.func(bug.func)
    ask = "The CI run is red. Don't change anything yet, just tell me why the tests fail."
    t.test(False).read(f.test_file).read(rel)
    steps = t.say(f"One test fails because of `{bug.func}` in {rel}: {bug.cause}.")
    return Session(
        pr.name,
        "diagnose",
        "test-then-read",
        "Why do the tests fail",
        [Turn(ask, steps)],
        setup=bug_setup(pr, bug),
        setup_message=f"Refactor {bug.func}",
    )


def lint_fix(ctx: Ctx, lb: LintBug) -> Session:
    pr, t = ctx.project, Traj(ctx)
    assert pr.lint_cmd
    ask = ctx.pick(["Run the linter and fix whatever it reports.", "Lint is failing, fix it."])
    t.bash(pr.lint_cmd, False, "Run the linter").read(lb.file)
    t.edit(lb.file, lb.bad, lb.good, say=f"{lb.file}: {lb.message}.")
    t.bash(pr.lint_cmd, True, "Run the linter again").test(True)
    steps = t.say(f"Fixed {lb.file} ({lb.message}); lint and tests pass.")
    setup = {lb.file: apply(pr.files, lb.file, lb.good, lb.bad)[lb.file]}
    return Session(
        pr.name,
        "lint-fix",
        "lint-read-edit",
        "Fix lint errors",
        [Turn(ask, steps)],
        setup=setup,
        setup_message="Quick fix",
    )


# --------------------------------------------------------------------------- multi-turn


def fix_then_test_commit(ctx: Ctx, bug: Bug, variant: str) -> Session:
    s = fix_bug(ctx, bug, variant)
    pr, f = ctx.project, ctx.project.func(bug.func)
    path = new_test_path(pr, f)
    t2 = Traj(ctx).write(path, f.new_test).test(True)
    s.turns.append(
        Turn(
            "Thanks. Add one more test for that function so it stays fixed.",
            t2.say(f"Added {path}; the suite passes."),
        )
    )
    t3 = Traj(ctx).bash(f'git add -A && git commit -qm "Fix {bug.func}"', True, "Commit")
    t3.bash("git log --oneline -1", True, "Show the commit")
    s.turns.append(Turn("Great, commit it.", t3.say(f'Committed as "Fix {bug.func}".')))
    s.kind, s.variant = "multi-turn", f"fix+test+commit/{variant}"
    return s


def tests_then_fix(ctx: Ctx, bug: Bug) -> Session:
    pr = ctx.project
    rel = bug_file(pr, bug)
    t1 = Traj(ctx).test(False)
    first = t1.say(f"The suite fails: {bug.symptom}. The cause looks to be in {rel}.")
    t2 = Traj(ctx).read(rel).edit(rel, bug.bad, bug.good).test(True)
    second = t2.say(f"Fixed: {bug.cause}. All tests pass.")
    return Session(
        pr.name,
        "multi-turn",
        "tests+fix",
        "Run tests, then fix",
        [Turn("Run the tests please.", first), Turn("OK, fix it.", second)],
        setup=bug_setup(pr, bug),
        setup_message="Speed up helpers",
    )


def explain_then_rename(ctx: Ctx, f: Func, new: str) -> Session:
    s = explain(ctx, f, "read")
    r = rename(ctx, f.name, new, "sequential")
    r.turns[0].message = f"Good. Now rename it to `{new}` everywhere."
    s.turns.append(r.turns[0])
    s.kind, s.variant = "multi-turn", "explain+rename"
    return s


# --------------------------------------------------------------------------- sub-agents


def subagent(ctx: Ctx, f: Func, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    agent = "explore" if variant == "explore" else "general"
    prompt = (
        f"Find every place in {ctx.root.name} that calls or tests `{f.name}` and report the "
        "files and line numbers. Do not change anything."
        if agent == "explore"
        else f"Review `{f.name}` in {f.file} for unhandled edge cases and report them briefly. "
        "Do not edit files."
    )
    hits = grep_lines(pr.files, re.escape(f.name), occurrences(pr.files, f.name, ext_of(pr)))
    child = Traj(ctx)
    if agent == "explore":
        child.grep(f.name, include=pr.include)
        report = "\n".join(hits)
    else:
        child.read(f.file)
        report = f"`{f.name}` {f.summary}. Inputs outside that contract are not validated."
    sub = child.say(report)
    desc = "Find uses of " + f.name if agent == "explore" else "Review " + f.name
    t.add(call("task", description=desc, prompt=prompt, subagent_type=agent))
    ask = (
        f"Use a subagent to find all uses of `{f.name}`, then summarise."
        if agent == "explore"
        else f"Have a subagent review `{f.name}` for edge cases and tell me what it found."
    )
    steps = t.say(f"The subagent reported on `{f.name}`:\n{report}")
    s = Session(pr.name, "subagent", agent, desc, [Turn(ask, steps)])
    s.subagent[prompt] = sub
    return s


# --------------------------------------------------------------------------- failures


def api_error(ctx: Ctx, bug: Bug) -> Session:
    s = fix_bug(ctx, bug, "test-first")
    steps = [*s.turns[0].steps[:2], error(400, "Invalid request: context rejected by provider.")]
    ctx.expect[:] = ctx.expect[:1]
    s.turns[0] = Turn(s.turns[0].message, steps, outcome="api-error")
    s.kind, s.variant = "failed", "api-error"
    return s


def aborted(ctx: Ctx, bug: Bug) -> Session:
    """The user interrupts after the first test run and asks again with --continue."""
    pr = ctx.project
    rel = bug_file(pr, bug)
    s = fix_bug(ctx, bug, "test-first")
    first = Traj(ctx)
    first.steps = s.turns[0].steps[:2]
    ctx.expect[:] = ctx.expect[:1]
    t2 = Traj(ctx).read(rel).edit(rel, bug.bad, bug.good).test(True)
    s.turns = [
        Turn(s.turns[0].message, first.interrupt(), outcome="aborted"),
        Turn(
            "Sorry, I interrupted you. Please go on with the fix.",
            t2.say(f"Fixed `{bug.func}`: {bug.cause}. Tests pass."),
        ),
    ]
    s.kind, s.variant = "failed", "aborted+continue"
    return s


def denied(ctx: Ctx, variant: str) -> Session:
    pr, t = ctx.project, Traj(ctx)
    if variant == "push":
        ask = "Push main to origin so CI runs."
        t.bash("git push origin main", False, "Push to origin")
        steps = t.say("Pushing needs your approval and was rejected, so nothing was pushed.")
    else:
        ask = "Clean out the build artifacts and caches before I package this."
        t.bash("rm -rf build dist", False, "Remove build output")
        t.bash("git clean -ndX", True, "List ignored files (dry run)")
        steps = t.say(
            "I am not allowed to run `rm` here. `git clean -ndX` lists what would be "
            "removed; delete those yourself or allow rm."
        )
    return Session(
        pr.name,
        "failed",
        f"denied-{variant}",
        "Clean up" if variant != "push" else "Push main",
        [Turn(ask, steps)],
    )
