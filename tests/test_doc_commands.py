"""Every command the documentation shows runs as written.

Every fenced command in README.md and docs/*.md that runs one of the project's scripts parses with that script's own
argument parser and passes its flag checks; the README's quick start commands run for real (slow).
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
from doc_text import DOCS, README, code_blocks, rel


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
