"""The package's shape, read from its source: dependencies point one way, private names stay private."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradinspect"

# What each part may import from gradinspect (besides itself): cli -> commands -> engine -> artifacts;
# render depends only on report; report, errors and destinations are leaves.
ALLOWED = {
    "cli": {"commands", "engine", "artifacts", "render", "report", "errors", "destinations", "__init__"},
    "__main__": {"cli"},
    "__init__": {"commands", "artifacts", "errors"},
    "commands": {"engine", "artifacts", "report", "errors", "destinations"},
    "engine": {"artifacts", "report", "errors"},
    "artifacts": {"report", "errors"},
    "render": {"report", "errors"},
    "report": {"errors", "jsonform"},
    "jsonform": set(),
    "destinations": {"errors"},
    "errors": set(),
    "formatting": set(),
}
# The leaves every part may use.
for _allowed in ALLOWED.values():
    _allowed.update({"errors", "formatting"})
ALLOWED["errors"].discard("errors")


def _part(module: str) -> str:
    parts = module.split(".")
    # `from gradinspect import __version__` takes an attribute of the package itself.
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """Every (line, imported gradinspect module, imported names) in the file, function-level imports included."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gradinspect":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gradinspect":
                    yield node.lineno, alias.name, []


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_one_way(path):
    me = _part(_module_name(path))
    for line, module, names in _imports(path):
        targets = [module] if module != "gradinspect" else [f"gradinspect.{n}" for n in names]
        for target in targets:
            part = _part(target)
            assert part == me or part in ALLOWED[me] or target == "gradinspect", (
                f"{path.relative_to(PACKAGE)}:{line} ({me}) imports {target} ({part})"
            )


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(path):
    me = _module_name(path)
    for line, module, names in _imports(path):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert module == me or not private, f"{path.relative_to(PACKAGE)}:{line} imports {private} from {module}"


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(PACKAGE)) for p in FILES if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_every_exception_class_lives_in_errors_py():
    outside = []
    for path in FILES:
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(base, "id", getattr(base, "attr", "")).endswith(("Error", "Exception", "Problem"))
                for base in node.bases
            ):
                outside.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert outside == []


def test_one_home_for_the_informative_line_of_an_exception():
    """`str(exc).splitlines()[0]` is written once, in formatting.first_line."""
    copies = [
        str(p.relative_to(PACKAGE))
        for p in FILES
        if p.name != "formatting.py" and ".splitlines()[0]" in p.read_text() and "exc" in p.read_text()
    ]
    assert copies == []


def _click_callbacks(tree: ast.AST) -> set[str]:
    """Functions registered as Click commands (``@main.command()``): their parameters are Click's options."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
                    names.add(node.name)
    return names


# The public Python API takes the CLI's options as explicit, typed, keyword-only parameters (an IDE
# and a type checker show them; a ``**options`` bag or packed tuples would hide them): the one
# place where more than seven parameters is right.
PUBLIC_API = {"inspect_gradients", "inspect_flow", "check", "verify"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    """No module over 400 lines, no function over 60 lines or 7 parameters (Click callbacks and the
    public API excepted: it takes every option as a typed keyword, and its docstring documents each,
    so the public API's docstrings do not count towards its length)."""
    source = path.read_text()
    assert len(source.splitlines()) <= 400, f"{path.relative_to(PACKAGE)} has {len(source.splitlines())} lines"
    tree = ast.parse(source)
    callbacks = _click_callbacks(tree)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        where = f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        public = node.name in PUBLIC_API and path.parent.name == "commands"
        doc = node.body[0] if public and ast.get_docstring(node) else None
        length = node.end_lineno - node.lineno + 1 - (doc.end_lineno - doc.lineno + 1 if doc else 0)
        assert length <= 60, f"{where} is {length} lines"
        args = node.args
        count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
        count -= 1 if args.args and args.args[0].arg in ("self", "cls") else 0
        assert count <= 7 or node.name in callbacks or public, f"{where} takes {count} parameters"


def test_every_command_validates_its_options_before_importing_tensorflow():
    """Bad option values are found in a fraction of a second: TensorFlow is never imported for them."""
    import subprocess
    import sys

    runs = [
        ["grad", "M", "--all", "--loss", "nope"],
        ["grad", "M", "--all", "--stage2", "__import__('os')"],
        ["grad", "M", "--all", "--input", "missing.npy"],
        ["grad", "M", "--all", "--seed", "-1"],
        ["check", "M", "--rtol", "-1"],
        ["check", "M", "--max-zero-fraction", "2"],
        ["check", "M", "--baseline", "missing.json"],
        ["check", "M", "--loss", "mse"],
        ["verify", "M", "--layer", "dense_1", "--eps", "0"],
        ["verify", "M", "--layer", "dense_1", "--entries", "0"],
        ["verify", "M", "--layer", "dense_1", "--loss", "nope"],
        ["verify", "M", "--layer", "dense_1", "--target", "missing.npy", "--loss", "mse"],
        ["layers", "M", "--max-memory", "lots"],
        ["flow", "M", "--loss", "nope"],
        ["flow", "M", "--plot", "flow.gif"],
        ["check", "M", "--rules", "missing.toml"],
        ["grad", "M", "--all", "--plot", "g.bmp"],
    ]
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from gradinspect.cli import main\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    args = [sys.argv[2] if a == 'M' else a for a in args]\n"
        "    codes.append(CliRunner().invoke(main, args).exit_code)\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(json.dumps([codes, heavy[:3]]))\n"
    )
    import json

    model = str(PACKAGE.parent / "sample_models" / "mlp.keras")
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(runs), model], capture_output=True, text=True, check=True, timeout=120
    )
    codes, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(runs)
    assert heavy == []


def _import_graph() -> dict[str, set[str]]:
    """Module -> the gradinspect modules it imports (``from pkg import module`` counts as the module),
    function-level and TYPE_CHECKING imports included."""
    modules = {_module_name(p) for p in FILES}
    graph: dict[str, set[str]] = {}
    for path in FILES:
        edges = set()
        for _line, module, names in _imports(path):
            for name in names or [""]:
                target = f"{module}.{name}"
                edges.add(target if target in modules else module)
        graph[_module_name(path)] = edges & modules
    return graph


def test_no_import_circle_anywhere():
    graph = _import_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_command_module_imports_another():
    """Commands share the engine's request building, not each other."""
    graph = _import_graph()
    crossing = [
        (module, target)
        for module, targets in graph.items()
        if module.startswith("gradinspect.commands.")
        for target in targets
        if target.startswith("gradinspect.commands.") and target != module
    ]
    assert crossing == []


def test_the_public_api_takes_explicit_typed_keywords():
    """Every public function names its parameters with types: no ``**options`` bag (assert_healthy
    forwards to check, whose parameters it shares)."""
    import inspect

    import gradinspect

    for name in ("inspect_gradients", "inspect_flow", "check", "verify", "list_layers", "load_model"):
        params = inspect.signature(getattr(gradinspect, name)).parameters.values()
        assert not [p for p in params if p.kind is p.VAR_KEYWORD], name
        assert all(p.annotation is not p.empty for p in params), name


def test_only_the_artifacts_package_branches_on_the_model_format():
    """Format-specific reading lives behind the artifacts package's readers (formats, listing,
    loading): commands and the engine ask for facts (the config graph, a listing, a loader) and
    never test which format a file is."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "artifacts" not in path.relative_to(PACKAGE).parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ModelFormat"
    ]
    assert offenders == []
