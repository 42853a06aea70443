"""The README and docs/ stand alone: every relative link resolves inside the repository, and
nothing a reader or operator opens cites a guide the repository does not ship."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "grafana" / "README.md"]
SHIPPED = [*PAGES, *sorted((ROOT / "deploy").iterdir()), *sorted((ROOT / "examples").iterdir()),
           *sorted((ROOT / "grafana" / "prometheus").iterdir())]


def test_every_relative_link_of_the_readme_and_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_docs_and_shipped_files_cite_only_the_repositorys_own_docs() -> None:
    citing = [str(path.relative_to(ROOT)) for path in SHIPPED
              if path.is_file() and re.search(r"\b(DESIGN|DOMAIN)\.md", path.read_text(encoding="utf-8"))]
    assert citing == [], "cite docs/design.md or docs/domain.md instead"


def test_the_readme_has_one_row_per_benchmark_with_command_figure_target_and_date() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Benchmarks"):]
    rows = [line for line in table.splitlines() if line.startswith("| `make ")]
    commands = [row.split("|")[1].strip() for row in rows]
    assert len(commands) == len(set(commands)) >= 6
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 4 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", cells[3]), row
