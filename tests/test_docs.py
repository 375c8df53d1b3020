"""The documentation matches the code: every module named, every cited docs/ path and every repository path of the
README and docs/ present, the README's per-dataset defaults equal to the one table train.py resolves them from."""
import re

import pytest

from conftest import REPO
from perceiver.data import DATASET_DEFAULTS

SOURCES = [p for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".js", ".html") and p.is_file()
           and not any(part in (".venv", ".git", "node_modules", "build") for part in p.relative_to(REPO).parts)]


def test_architecture_names_every_module():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    modules = [p for p in (REPO / "perceiver").glob("*.py")] + [p for p in (REPO / "perceiver" / "data").glob("*.py")]
    missing = []
    for p in modules:
        rel = p.relative_to(REPO).as_posix()
        if rel not in text and f"`{p.stem}.py`" not in text and f", `{p.stem}.py`" not in text:
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_every_cited_docs_path_exists():
    cited = set()
    for path in SOURCES:
        cited |= set(re.findall(r"docs/[\w./-]+\.(?:md|png|svg|json)", path.read_text(errors="ignore")))
    missing = sorted(c for c in cited if not (REPO / c).exists())
    assert not missing, f"cited but absent: {missing}"


def test_readme_dataset_table_matches_the_defaults_train_py_uses():
    readme = (REPO / "README.md").read_text()
    for name, d in DATASET_DEFAULTS.items():
        row = re.search(rf"^\| `{name}` \|.*\| (\d+) / (\d+) / ([\d.]+) \|\s*$", readme, re.M)
        assert row, f"README's dataset table has no row for {name}"
        batch, bands, freq = int(row.group(1)), int(row.group(2)), float(row.group(3))
        assert (batch, bands, freq) == (d["batch_size"], d["fourier_bands"], d["max_freq"]), name


@pytest.mark.parametrize("flag", ["batch_size", "fourier_bands", "max_freq"])
def test_train_help_states_the_table_defaults(flag):
    import train
    text = train.build_parser().format_help()
    for name, d in DATASET_DEFAULTS.items():
        assert f"{name} {d[flag]}" in " ".join(text.split())


#: the folders of the repository whose files the documentation names
REPO_DIRS = ("perceiver", "benchmarks", "tests", "docs", ".ci")


def test_every_repository_path_the_docs_name_exists():
    """README.md and docs/*.md name only files and folders that exist, except the files they show a command writing
    (``--json PATH``, ``JSON=PATH``); run directories (logs/) and data folders are a user's, not the repository's."""
    missing = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        written = set(re.findall(r"(?:--json\s+|JSON=)([\w./-]+)", text))
        for path in re.findall(rf"(?<![\w./-])((?:{'|'.join(re.escape(d) for d in REPO_DIRS)})/[\w./-]*)", text):
            path = path.rstrip(".")
            if path not in written and not (REPO / path).exists():
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert not missing, f"named but absent: {sorted(set(missing))}"
