"""The package's shape: no module of perceiver/ imports itself back through others (imports read with `ast`, those
inside functions included); the command line's namespace stays in the command-line modules, and every flag of
train.py reaches the typed settings the library reads."""
import ast

from conftest import REPO

PACKAGE = REPO / "perceiver"


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the path that closes it (depth-first search)."""
    found, done = [], set()

    def visit(node, path):
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_import_graph_is_read_correctly():
    graph = import_graph()
    assert {"perceiver.blocks", "perceiver.config", "perceiver.kernels"} <= graph["perceiver.model"]
    assert "perceiver.blocks" in graph["perceiver.kernels"] and "perceiver.rundir" in graph["perceiver.checkpoint"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []
    assert "perceiver.model" not in import_graph()["perceiver.kernels"]  # the speed-ups build on the blocks


def namespace_users() -> list[str]:
    """Modules of perceiver/ that name argparse's Namespace."""
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            attribute = (isinstance(node, ast.Attribute) and node.attr == "Namespace"
                         and isinstance(node.value, ast.Name) and node.value.id == "argparse")
            imported = (isinstance(node, ast.ImportFrom) and node.module == "argparse"
                        and any(alias.name == "Namespace" for alias in node.names))
            if attribute or imported:
                users.append(path.relative_to(REPO).as_posix())
                break
    return users


def test_the_command_line_namespace_stays_at_the_command_line_edges():
    # train.py's parse; the visualizers' shared command line; `python -m perceiver.predict`
    assert namespace_users() == ["perceiver/cli.py", "perceiver/predict.py", "perceiver/viz/cli.py"]


def test_every_flag_of_train_py_reaches_the_settings(tmp_path):
    import train
    from perceiver import cli
    from perceiver.config import PerceiverConfig
    from perceiver.data import PER_DATASET_FLAGS
    from perceiver.settings import Settings

    args, _ = cli.parse(train.build_parser, ["--dataset", "shapes2d", "--logs_dir", str(tmp_path)])
    flags = vars(args)
    settings = Settings.from_flags(flags)
    typed = {}
    for group in ("run", "data", "batches", "regularisation", "optim", "schedule", "logging", "runtime"):
        value = getattr(settings, group)
        typed.update({f: getattr(value, f) for f in value.__dataclass_fields__})
    options = {f.dest: f.field_value(settings.model[f.field]) for f in PerceiverConfig.flags()}
    resolved_away = {flag for own in PER_DATASET_FLAGS.values() for flag in own.values()}  # into the generic ones
    assert set(flags) == set(typed) | set(options) | resolved_away
    assert not set(typed) & set(options)
    for name, value in {**typed, **options}.items():
        assert value == (tuple(flags[name]) if isinstance(flags[name], list) else flags[name]), name
    assert dict(settings.flags) == flags
