"""The documentation matches the code.

Every relative link in README.md and docs/*.md resolves (file and heading); every fenced command that runs one of
the project's scripts parses with that script's own argument parser and passes its flag checks; the quick start's
commands run for real (slow); docs/ARCHITECTURE.md's imports column is what the modules import; the README's
layout names every module; the per-dataset defaults in docs/TRAINING.md are the ones train.py uses; and no text a
reader sees speaks of how the project was developed instead of what it is.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, _subprocess_env
from perceiver.data import DATASET_DEFAULTS

SKIP_PARTS = (".venv", ".git", "node_modules", "build", "dist", "__pycache__", ".pytest_cache")
SOURCES = [p for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".js", ".html", ".css", ".toml", ".txt", ".ini")
           and p.is_file() and not any(part in SKIP_PARTS or part.endswith(".egg-info")
                                       for part in p.relative_to(REPO).parts)]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README = REPO / "README.md"


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ------------------------------------------------------------------------------------------- markdown helpers

FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.M | re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[*_]{2,}|`", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


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


# ------------------------------------------------------------------------------------------------- commands


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block, as words: continuation lines joined, comments dropped, variables
    assigned earlier in the block (``COMMON="..."``) expanded; a command built from shell constructs the test cannot
    expand (``"${ARGS[@]}"``, ``$(...)``) is left out."""
    variables: dict[str, str] = {}
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:  # a quote the line does not close: not a command to check
            continue
        current: list[str] = []
        for word in words + [";"]:
            if word in (";", "&&", "||", "|", "&"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    out = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            variables[name] = value
        expanded = []
        for w in words:
            m = re.fullmatch(r"\$([A-Za-z_]\w*)", w)
            if m and m.group(1) in variables:
                expanded += variables[m.group(1)].split()
            else:
                expanded.append(w)
        if expanded and not any("${" in w or "$(" in w for w in expanded):
            out.append(expanded)
    return out


def project_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(script, arguments) when ``words`` runs one of the project's scripts, else None."""
    if words[0] in ("srun",):
        words = words[1:]
    if words and words[0] == "torchrun":
        script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
        return (words[script], words[script + 1:]) if script is not None else None
    if words and words[0] == "perceiver-predict":
        return "perceiver.predict", words[1:]
    if not words or not re.fullmatch(r"(\S*/)?python3?", words[0]) or len(words) < 2:
        return None
    if words[1] == "-m":
        return (words[2], words[3:]) if words[2].startswith("perceiver") else None
    if words[1].startswith("-"):  # python -c "...": not a script of the project
        return None
    return words[1], words[2:]


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of every project command in the fenced shell blocks of README.md and docs/."""
    found = []
    for doc in DOCS:
        for lang, body in code_blocks(doc.read_text()):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            for words in shell_commands(body):
                call = project_invocation(words)
                if call:
                    found.append((f"{rel(doc)}: {' '.join(words)}", *call))
    return found


class _Parsed(Exception):
    pass


def _parse_only(main, argv):
    """Run a script's ``main(argv)`` up to its argument parsing and no further."""
    import argparse

    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        main(argv)
    except _Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = real
    raise AssertionError("the script's main returned without parsing its arguments")


def check_train(argv: list[str], workdir: Path) -> None:
    """train.py's own parse: presets, dataset defaults and flag checks (`perceiver.cli.parse`), in a folder holding
    what the command refers to."""
    import train
    from perceiver.cli import parse, resolve_defaults, with_presets

    for flag, value in zip(argv, argv[1:]):
        if flag == "--resume":  # a run to resume: the command refers to one that exists
            (workdir / value).mkdir(parents=True, exist_ok=True)
            (workdir / value / "status.json").write_text('{"state": "interrupted"}')
        if flag == "--config" and not (workdir / value).exists():  # a run's config.json, from the quick start
            quick, _ = with_presets(train.build_parser, ["--preset", "quickstart"])
            (workdir / value).parent.mkdir(parents=True, exist_ok=True)
            (workdir / value).write_text(json.dumps({"args": vars(resolve_defaults(quick))}))
    parse(train.build_parser, argv)


def check_viz(module: str, argv: list[str]) -> None:
    import importlib

    mod = importlib.import_module(module)
    parser = mod.build_parser()
    args = parser.parse_args(argv)
    check = getattr(mod, "check", None)
    if check is None:
        from perceiver.viz.cli import check_alpha_dpi as check
    check(parser, args)


def check_command(script: str, argv: list[str], workdir: Path) -> None:
    name = script.removeprefix("./")
    if name == "train.py":
        check_train(argv, workdir)
    elif name in ("visualize_results.py", "visualize_attention.py", "demo_visualizations.py"):
        check_viz(name[:-3], argv)
    elif name == "perceiver.predict":
        from perceiver import predict
        parser = predict.build_parser()
        predict.check(parser, parser.parse_args(argv))
    elif name.startswith("benchmarks/") and name.endswith(".py"):
        import importlib
        _parse_only(importlib.import_module(name[:-3].replace("/", ".")).main, argv)
    else:
        raise AssertionError(f"{script} is not a script of this project")


def test_the_docs_hold_the_commands_this_test_checks():
    commands = documented_commands()
    scripts = {script for _, script, _ in commands}
    assert {"train.py", "visualize_results.py", "visualize_attention.py", "demo_visualizations.py",
            "perceiver.predict"} <= scripts, scripts
    quick = [c for c in commands if c[0].startswith("README.md") and c[2] == ["--preset", "quickstart"]]
    assert quick, "the README's quick start command is not in a fenced block"


@pytest.mark.parametrize("where,script,argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_parses_with_its_scripts_parser(where, script, argv, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU command is checked on a CPU machine too
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            check_command(script, argv, tmp_path)
    except SystemExit as e:
        pytest.fail(f"{where}\n  exits {e.code}: {err.getvalue().strip()}")


def test_python_blocks_of_the_docs_are_valid_python():
    for doc in DOCS:
        for lang, body in code_blocks(doc.read_text()):
            if lang == "python":
                ast.parse(body)


# -------------------------------------------------------------------------------------- the quick start, for real


@pytest.mark.slow
def test_quick_start_commands_run_as_written(tmp_path):
    """The README's first command trains (its 24 epochs), then the README's commands that read logs/quickstart (the
    visualizers, predict, the Python API) run on that run. The preset trains a fixed number of steps, so the README's
    floor of 0.85 test accuracy holds on a busy machine too."""
    def run(words, timeout=300):
        p = subprocess.run([sys.executable, *words], cwd=tmp_path, env=_subprocess_env(), capture_output=True,
                           text=True, timeout=timeout)
        assert p.returncode == 0, f"{' '.join(words)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p.stdout

    def script(name):
        return str(REPO / name)

    text = README.read_text()
    assert ".venv/bin/python train.py --preset quickstart" in text
    out = run([script("train.py"), "--preset", "quickstart", "--no_progress"])
    run_dir = tmp_path / "logs" / "quickstart"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert rows[-1]["epoch"] == 24 and rows[-1]["test_acc"] >= 0.85, \
        f"the quick start ended at {rows[-1]['test_acc']}:\n{out[-3000:]}"
    assert (run_dir / "checkpoints" / "last.pt").exists() and list((run_dir / "attention").glob("epoch_*.npz"))

    # the README's follow-up commands, word for word, on that run
    readme_commands = [(s, a) for w, s, a in documented_commands() if w.startswith("README.md")
                       and any("logs/quickstart" in x for x in a)]
    assert {s for s, _ in readme_commands} >= {"visualize_results.py", "visualize_attention.py",
                                                "demo_visualizations.py", "perceiver.predict"}
    from perceiver.data.shapes import generate_shapes2d
    import numpy as np
    from PIL import Image
    images, _, _ = generate_shapes2d(1, np.random.default_rng(0))
    Image.fromarray(images[0]).save(tmp_path / "my_image.png")
    for name, argv in readme_commands:
        words = ["-m", name, *argv] if name.startswith("perceiver.") else [script(name), *argv]
        printed = run(words)
        if name == "perceiver.predict":
            assert re.fullmatch(r"my_image\.png: \w+ [01]\.\d+\s*", printed), printed
    plots = run_dir / "plots"
    assert (plots / "training_dashboard.png").exists() and (plots / "attention_evolution_analysis.png").exists()
    assert (plots / "explorer.html").exists()

    # the README's Python API block
    block = next(body for lang, body in code_blocks(text) if lang == "python" and "load_model" in body)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.chdir(tmp_path):
        exec(compile(block, "README.md", "exec"), {})
    assert re.match(r"\[\('\w+', 0\.\d+\), \('\w+', ", out.getvalue()), out.getvalue()


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
