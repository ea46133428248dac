"""The README and docs stand alone: no pointer to a file the repository lacks, what the
test command needs said beside it, and the authoring guide starting with its install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
        ".hypothesis", "build", "dist", ".selfdrive", "var"}
# Documents that were never part of the repository (split so this file does not match).
ABSENT = re.compile(r"\b(" + "DESIGN" + r"(\.md|\s+section)|" + "STYLE" + r"\.md)", re.I)


def _text_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in (".py", ".md", ".toml", ".sh", ".j2", ".txt", ""):
            out.append(path)
    return out


def test_nothing_points_to_documents_outside_the_repository() -> None:
    found = []
    for path in _text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if ABSENT.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_relative_links_in_the_docs_resolve() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", doc.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_the_test_command_says_it_needs_root_apt_and_makes_a_user() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    command = text.index("pip install -q -e '.[test]'")
    beside = text[command:command + 1200]
    for needed in ("root", "apt-get", "sdtest", "openssh-server", "postgresql", "openssl",
                   "curl"):
        assert needed in beside, f"{needed!r} is not said beside the README's test command"


def test_authors_install_pytest_with_an_extra_of_their_own() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert [r.split(">")[0] for r in extras["authoring"]] == ["pytest"]
    guide = (ROOT / "docs" / "authoring.md").read_text(encoding="utf-8")
    first_block = guide[guide.index("```bash"):]
    first_block = first_block[:first_block.index("\n```", 7)]
    assert "pip install 'selfdrive[authoring]'" in first_block
