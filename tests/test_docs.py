"""The documentation matches the code.

Every relative link in README.md and docs/*.md resolves (file and heading); docs/ARCHITECTURE.md's imports column is
what the modules import; the README's layout names every module; the per-dataset defaults in docs/TRAINING.md are
the ones train.py uses; and no text a reader sees speaks of how the project was developed instead of what it is.
The documented commands are checked in test_doc_commands.py.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO
from doc_text import DOCS, README, anchors, code_blocks, prose, rel
from perceiver.data import DATASET_DEFAULTS

SKIP_PARTS = (".venv", ".git", "node_modules", "build", "dist", "__pycache__", ".pytest_cache")
SOURCES = [p for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".js", ".html", ".css", ".toml", ".txt", ".ini")
           and p.is_file() and not any(part in SKIP_PARTS or part.endswith(".egg-info")
                                       for part in p.relative_to(REPO).parts)]


# ---------------------------------------------------------------------------------------------------- links


def test_every_relative_link_in_readme_and_docs_resolves():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose(doc.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            if not dest.exists():
                broken.append(f"{rel(doc)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{rel(doc)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_cited_docs_path_exists():
    cited = set()
    for path in SOURCES:
        cited |= set(re.findall(r"docs/[\w./-]+\.(?:md|png|svg|json)", path.read_text(errors="ignore")))
    missing = sorted(c for c in cited if not (REPO / c).exists())
    assert not missing, f"cited but absent: {missing}"


# ----------------------------------------------------------------------------- the architecture notes, the layout


def package_imports(path: Path) -> tuple[set[str], set[str]]:
    """(imported at module level, imported inside functions only) modules of `perceiver`, relative to it."""
    parts = list(path.relative_to(REPO).parent.parts)

    def module_of(names: list[str]) -> str:
        while names:  # `from . import AUTO_AUGMENT` imports a name of the package, not a module
            p = REPO.joinpath("perceiver", *names)
            if p.with_suffix(".py").exists() or (p / "__init__.py").exists():
                return ".".join(names)
            names = names[:-1]
        return ""

    eager, lazy = set(), set()

    def visit(node, inside_function):
        for child in ast.iter_child_nodes(node):
            inner = inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.ImportFrom) and child.level:
                base = parts[:len(parts) - child.level + 1] + (child.module.split(".") if child.module else [])
                targets = [base + [a.name] for a in child.names] if not child.module else [base]
            elif isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] == "perceiver":
                targets = [child.module.split(".") + [a.name] for a in child.names]
            elif isinstance(child, ast.Import):
                targets = [a.name.split(".") for a in child.names if a.name.split(".")[0] == "perceiver"]
            for t in targets:
                if t and t[0] == "perceiver" and module_of(t[1:]):
                    (lazy if inner else eager).add(module_of(t[1:]))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return eager, lazy - eager


def architecture_rows() -> dict[str, str]:
    rows = {}
    for line in (REPO / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([\w./]+(?:\.py|/))`", cells[0]) if len(cells) == 3 else None
        if m:
            rows[m.group(1)] = cells[2]
    return rows


def test_architecture_imports_column_is_what_each_module_imports():
    wrong = []
    for name, column in architecture_rows().items():
        target = REPO / name
        files = [target] if name.endswith(".py") else sorted(target.rglob("*.py"))
        assert files, f"docs/ARCHITECTURE.md names {name}, which does not exist"
        eager, lazy = set(), set()
        for f in files:
            e, lz = package_imports(f)
            eager |= e
            lazy |= lz
        if name.endswith("/"):  # a package's row: what it imports from outside itself
            own = name.rstrip("/").removeprefix("perceiver/").replace("/", ".")
            eager = {m for m in eager if m != own and not m.startswith(own + ".")}
            lazy = {m for m in lazy if m != own and not m.startswith(own + ".")}
        lazy -= eager
        said_eager, _, said_lazy = column.partition("lazily")
        claimed = (set(re.findall(r"`([\w.]+)`", said_eager)), set(re.findall(r"`([\w.]+)`", said_lazy)))
        if claimed != (eager, lazy):
            wrong.append(f"{name}: the table says {sorted(claimed[0])}; lazily {sorted(claimed[1])} -- the code "
                         f"imports {sorted(eager)}; lazily {sorted(lazy)}")
    assert not wrong, "docs/ARCHITECTURE.md's imports column:\n" + "\n".join(wrong)


def test_architecture_has_a_row_for_every_module():
    rows = architecture_rows()
    modules = [*REPO.glob("perceiver/*.py"), *REPO.glob("perceiver/data/*.py"), *REPO.glob("*.py")]
    missing = [rel(p) for p in modules if rel(p) not in rows]
    packages = [rel(p) + "/" for p in REPO.glob("perceiver/*/") if (p / "__init__.py").exists()
                and rel(p) != "perceiver/data"]
    missing += [p for p in packages if p not in rows]
    assert not missing, f"docs/ARCHITECTURE.md has no row for {missing}"


def test_readme_layout_names_every_module():
    text = README.read_text()
    block = text[text.index("## Project layout"):]
    block = code_blocks(block)[0][1]
    names = set(re.findall(r"[\w.]+\.py|[\w]+/", block))
    expected = {p.name for p in REPO.glob("perceiver/*.py")} | {p.name for p in REPO.glob("*.py")}
    expected |= {p.name + "/" for p in REPO.glob("perceiver/*/") if (p / "__init__.py").exists()}
    missing = sorted(expected - names)
    assert not missing, f"README's project layout does not name {missing}"


def test_readme_stays_short_and_holds_the_quick_start_seed_table():
    lines = README.read_text().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; move reference material to docs/"
    table = [line for line in lines if re.match(r"\| seed \|", line)]
    assert table, "README's quick start has no table of seeds"


# ------------------------------------------------------------------------------------ per-dataset defaults


def test_training_guide_dataset_table_matches_the_defaults_train_py_uses():
    text = (REPO / "docs" / "TRAINING.md").read_text()
    for name, d in DATASET_DEFAULTS.items():
        row = re.search(rf"^\| `{name}` \|.*\| (\d+) / (\d+) / ([\d.]+) \|\s*$", text, re.M)
        assert row, f"docs/TRAINING.md's dataset table has no row for {name}"
        batch, bands, freq = int(row.group(1)), int(row.group(2)), float(row.group(3))
        assert (batch, bands, freq) == (d["batch_size"], d["fourier_bands"], d["max_freq"]), name


@pytest.mark.parametrize("flag", ["batch_size", "fourier_bands", "max_freq"])
def test_train_help_states_the_table_defaults(flag):
    import train
    text = train.build_parser().format_help()
    for name, d in DATASET_DEFAULTS.items():
        assert f"{name} {d[flag]}" in " ".join(text.split())


# --------------------------------------------------------------------- no word about how the project was made

#: Words about the making of the project rather than the project: a reader has no tracker, no work sessions, no
#: numbered rounds of work. (GitHub's own issue links, "issues/N" in a URL, are not prose and stay allowed.)
PROCESS_WORDS = [
    r"\bsessions?\b",
    r"\bhelper[- ]?\d+\b",
    r"(?<![/\w])issues? ?#?\d+\b",
    r"\bthe issue\b",
    r"\bitem \d+\b",
    r"\bround \d+\b(?! ?%)",
    r"\b(?:this|that|next|previous|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth) rounds?\b",
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|previous|last) sessions?\b",
    r"\bfiled by\b",
]


def test_no_development_process_words_in_docs_code_or_tests():
    pattern = re.compile("|".join(PROCESS_WORDS), re.I)
    here = Path(__file__).resolve()
    hits = []
    for path in SOURCES + [REPO / ".ci" / "run"]:
        if path.resolve() == here:
            continue
        for n, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            for m in pattern.finditer(line):
                hits.append(f"{rel(path)}:{n}: {m.group(0)!r} in {line.strip()[:120]}")
    assert not hits, "development-process words (say what the project is or does instead):\n" + "\n".join(hits)


#: the folders of the repository whose files the documentation names
REPO_DIRS = ("perceiver", "benchmarks", "tests", "docs", ".ci")


def test_every_repository_path_the_docs_name_exists():
    """README.md and docs/*.md name only files and folders that exist, except the files they show a command writing
    (``--json PATH``, ``--out PREFIX``, ``JSON=PATH``); run directories (logs/) and data folders are a user's, not the repository's."""
    missing = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        written = set(re.findall(r"(?:--json\s+|--out\s+|JSON=)([\w./-]+)", text))
        for path in re.findall(rf"(?<![\w./-])((?:{'|'.join(re.escape(d) for d in REPO_DIRS)})/[\w./-]*)", text):
            path = path.rstrip(".")
            if path not in written and not (REPO / path).exists():
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert not missing, f"named but absent: {sorted(set(missing))}"
