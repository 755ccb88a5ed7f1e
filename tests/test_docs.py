"""The documentation stands alone: every relative link resolves inside the repository.

Users get the repository, not the engineers' shared folder: a link to `../shared/...` or to any
place outside the checkout is a broken link for them. Anchors (`page.md#section`) must name a
heading of the page they point at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SCHEMA_LINE = re.compile(r"#\s*yaml-language-server:\s*\$schema=(\S+)")


def _anchors(page: Path) -> set[str]:
    # GitHub's rule: lower case, punctuation dropped, spaces to hyphens.
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _inside(path: str) -> bool:
    # Lexically, as a browser on the repository's host resolves it (not through symlinks).
    return not os.path.relpath(os.path.normpath(path), REPO).startswith("..")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # examples in code blocks are not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(page.parent / path) if path else str(page)
        if not _inside(resolved):
            broken.append(f"{target}: points outside the repository")
        elif not Path(resolved).exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(Path(resolved)):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
    assert "shared/DESIGN" not in text


def test_the_docs_exist_and_are_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("rules", "configuration", "cli", "deployment", "troubleshooting"):
        assert f"(docs/{name}.md)" in readme
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize("folder", ["mappings", "connector/examples/mappings"])
def test_example_mappings_name_a_schema_that_resolves_from_where_they_are_opened(folder: str) -> None:
    files = sorted((REPO / folder).glob("*.yaml"))
    assert files
    for file in files:
        found = SCHEMA_LINE.search(file.read_text(encoding="utf-8").splitlines()[0])
        assert found, f"{file}: no $schema line"
        # Editors resolve the path from the file as opened: through the link, and from its real folder.
        for base in (file.parent, file.resolve().parent):
            schema = os.path.normpath(base / found.group(1))
            assert _inside(schema) and Path(schema).is_file(), f"{file}: {found.group(1)} from {base}"
