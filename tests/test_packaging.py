"""constraints.txt pins every package a production install pulls in (pip install -c constraints.txt .),
at versions the project's own requirements accept."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            found[canonical(name)] = version
    return found


def test_every_runtime_dependency_and_what_it_pulls_in_is_pinned() -> None:
    pinned = pins()
    environment = {**default_environment(), "extra": ""}
    requirements = [Requirement(line.split("#")[0].strip()) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    todo = list(requirements)
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonical(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} does not satisfy {requirement}"
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(line) for line in metadata.distribution(name).requires or []]
        except metadata.PackageNotFoundError:
            continue
    extra = set(pinned) - seen
    assert not extra, f"constraints.txt pins packages a production install does not need: {sorted(extra)}"
