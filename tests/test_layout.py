"""The house reads top-down: each concept has one owner, and no module imports a later layer."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distill"
README = Path(__file__).resolve().parents[1] / "README.md"

# Lowest first. A module may import its own layer or lower ones, never a higher one.
LAYERS = [
    ["errors", "verdict", "config", "log", "lock", "metrics", "reaper", "prompts", "synthetic", "tiny"],
    ["records", "code_formats", "problems", "plots"],
    ["teachers"],
    ["verify"],
    ["filters"],
    ["rewards"],
    ["cards", "hub"],
    ["generate", "adaptive", "filter", "evaluate"],
    ["students", "memory", "plan", "train"],
    ["rl", "rl_demo"],
    ["demo", "pipeline_report", "pipeline"],
    ["cli_flags", "commands", "cli"],
]


def layer_of(module: str) -> int:
    head = module.removeprefix("distill.").split(".")[0]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """distill modules imported anywhere in the file (functions included), except under
    `if TYPE_CHECKING:` (annotations only, never run)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distill"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("distill"))
    return found - {"distill"}


def test_no_module_imports_a_later_layer_and_there_are_no_cycles():
    mods = modules()
    graph = {name: imports(path) for name, path in mods.items() if name != "distill"}
    backwards = [
        f"{name} -> {dep}"
        for name, deps in graph.items()
        for dep in deps
        if layer_of(dep) > layer_of(name)
    ]
    assert not backwards, backwards
    # cycles within a layer (e.g. hub <-> cards) are back-edges too
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            dep = dep if dep in graph else dep.rsplit(".", 1)[0]
            if state.get(dep) == 1 and dep != node:
                raise AssertionError("import cycle: " + " -> ".join([*path, dep]))
            if dep in graph and not state.get(dep):
                visit(dep, [*path, dep])
        state[node] = 2

    for name in graph:
        if not state.get(name):
            visit(name, [name])


def test_the_r1_trace_format_has_one_home():
    homes = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".jinja", ".yaml") and "</think>" in p.read_text()
    )
    assert homes == ["prompts.py"], homes


def test_readme_layout_names_every_module():
    text = README.read_text()
    layout = text[text.index("Layout:") :]
    layout = layout[: layout.index("\n## ")] if "\n## " in layout else layout
    named = set(re.findall(r"`([\w/]+\.py|[\w]+/)`", layout))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py":
            continue
        top = rel.parts[0]
        if len(rel.parts) == 1 and rel.name not in named:
            missing.append(rel.name)
        elif len(rel.parts) > 1 and f"{top}/" not in named:
            missing.append(f"{top}/")
        elif len(rel.parts) > 1 and f"{top}/{rel.name}" not in named and rel.name not in named:
            missing.append(str(rel))
    assert not missing, f"README's Layout paragraph does not name: {sorted(set(missing))}"
