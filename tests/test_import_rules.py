"""Issue 21's import rules, read from the source with `ast` (nothing is imported):

- no import circles, whether the imports run at module level or lazily inside a function;
- `scoring/` imports none of the engines or command lines (`workers`, `modal_burst`, `claidex`);
- the command lines import the engines, never the reverse; and no command line imports
  another package's command line (what they share lives in `claidex.command_line`);
- no source module is over 450 lines, word-list data aside.

What counts as an import: every `import` / `from ... import` statement anywhere in a module
(module level, functions, methods, `try` blocks), relative imports resolved against the
module's package, and `from package import name` counted as an import of the submodule
`package.name` when that is a module (else of `package`). An import of `a.b.c` is an edge to
`a.b.c` only, as import-linter/grimp count it; the packages' `__init__` modules are nodes of
their own. The one exception: imports under `if TYPE_CHECKING:` never run, so they are left
out of the circle check (they still count for the layering rules). Strings handed to an
importer (Celery's `include=["workers.tasks"]`) are not imports of the module naming them:
the Celery worker loads the tasks after the app module has finished importing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scoring", "workers", "modal_burst", "claidex")
ENGINE_PACKAGES = ("workers", "modal_burst", "claidex")
MAX_LINES = 450

# The command lines: they parse argv and call the engines. The three `cli` modules, the
# `__main__` modules that run them, and the pieces the three share (`--graph`, and how a
# failure becomes one `error:` line and exit code 2). Everything else in the four packages
# is engine or library code (the local engine, the Celery tasks, the Modal app and driver,
# the views the `claidex` commands print with) and must not import any of these.
SHARED_COMMAND_LINE = "claidex.command_line"
DEV = "claidex.dev."  # development-only code: the sample-data generator


def is_command_line(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last in ("cli", "__main__") or module == SHARED_COMMAND_LINE


# The only imports from one engine package into another. Beat's weekly full run goes to Modal
# when CLAIDEX_FULL_ENGINE=modal: workers.scheduled imports modal_burst.handoff (lazily, inside
# that task), and nothing else of modal_burst; modal_burst imports nothing of workers, so it
# is one-directional. Besides these, the command lines of workers and modal_burst import
# SHARED_COMMAND_LINE from claidex.
HANDOFFS = {"modal_burst.handoff": "workers.scheduled"}

# Word lists: data, not logic; the line limit does not apply (issue 21: "word-list data aside").
DATA_MODULES = frozenset({"claidex.dev.sample.vocabulary"})

# Known violations: none (issue 21 emptied this); nothing may be added to it.
ALLOWED_CIRCLES: list[frozenset[str]] = []
ALLOWED_LONG: dict[str, int] = {}


def source_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the four packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:`."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    inside.update(id(sub) for sub in ast.walk(stmt))
    return inside


def _imported(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:  # relative: against the package the module is in
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")
        if node.level > 1:
            parts = parts[: -(node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in known else base


def import_graph(*, runtime_only: bool) -> dict[str, set[str]]:
    """module -> the modules of the four packages it imports (itself excluded).

    runtime_only leaves out the imports under `if TYPE_CHECKING:`."""
    known = source_modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree) if runtime_only else set()
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                targets.update(t for t in _imported(module, path, node, known) if t in known)
        targets.discard(module)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
    return f"{sorted(component)}: " + "; ".join(edges)


def test_the_graph_sees_lazy_relative_and_submodule_imports() -> None:
    """The reader itself: a rule checked on a graph that misses imports proves nothing."""
    graph = import_graph(runtime_only=True)
    assert "workers.schedule" in graph["workers.app"]  # inside a function
    assert "workers.app" in graph["workers"]  # an __init__
    assert "modal_burst.bodies" in graph["modal_burst.app"]  # `from modal_burst import bodies`
    assert "scoring.stages.drive" in graph["claidex.local_engine"]  # `from scoring.stages.drive`
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_no_import_circles() -> None:
    graph = import_graph(runtime_only=True)
    found = circles(graph)
    unexpected = [_describe(c, graph) for c in found if c not in ALLOWED_CIRCLES]
    assert not unexpected, "import circles:\n" + "\n".join(unexpected)
    fixed = [sorted(c) for c in ALLOWED_CIRCLES if c not in found]
    assert not fixed, f"no longer circles, take them out of ALLOWED_CIRCLES: {fixed}"


def test_scoring_imports_no_engine() -> None:
    graph = import_graph(runtime_only=False)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "scoring"
        for target in targets
        if target.split(".")[0] in ENGINE_PACKAGES
    )
    assert not wrong, "scoring/ imports an engine or a command line:\n" + "\n".join(wrong)


def test_command_lines_import_engines_never_the_reverse() -> None:
    graph = import_graph(runtime_only=False)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not is_command_line(module)
        for target in targets
        if is_command_line(target)
    )
    assert not wrong, "engine code imports a command line:\n" + "\n".join(wrong)


def test_a_command_line_imports_no_other_command_line() -> None:
    """`workers full` is not a flavour of `claidex run`: each package's cli is its own
    entry point, reached only from that package's `__main__`; they share SHARED_COMMAND_LINE."""
    graph = import_graph(runtime_only=False)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if target.endswith(".cli") and module != target.rpartition(".")[0] + ".__main__"
    )
    assert not wrong, "a cli module imported from outside its own __main__:\n" + "\n".join(wrong)


def test_engines_meet_only_at_the_handoff() -> None:
    graph = import_graph(runtime_only=False)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] in ENGINE_PACKAGES
        and target.split(".")[0] != module.split(".")[0]
        and HANDOFFS.get(target) != module
        and not (target == SHARED_COMMAND_LINE and is_command_line(module))
    )
    assert not wrong, "one engine package imports another:\n" + "\n".join(wrong)


def test_only_command_lines_reach_the_dev_code() -> None:
    """claidex.dev (the sample-data generator) is for `claidex generate`/`demo`, the tests
    and ops/: no engine imports it."""
    graph = import_graph(runtime_only=False)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not module.startswith(DEV) and not is_command_line(module)
        for target in targets
        if target == DEV.rstrip(".") or target.startswith(DEV)
    )
    assert not wrong, "runtime code imports claidex.dev:\n" + "\n".join(wrong)


def test_no_module_over_450_lines() -> None:
    lengths = {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in source_modules().items()
    }
    assert lengths.keys() >= DATA_MODULES, f"data modules moved: {DATA_MODULES - lengths.keys()}"
    long = {
        module: lines
        for module, lines in sorted(lengths.items())
        if lines > MAX_LINES and module not in DATA_MODULES
    }
    unexpected = {m: n for m, n in long.items() if m not in ALLOWED_LONG}
    assert not unexpected, f"modules over {MAX_LINES} lines: {unexpected}"
    fixed = sorted(set(ALLOWED_LONG) - set(long))
    assert not fixed, f"no longer over {MAX_LINES} lines, take them out of ALLOWED_LONG: {fixed}"
