"""Check that .ci/lowest-constraints.txt pins every dependency of pyproject.toml at its declared floor.

Usage: python .ci/check_floors.py [--installed] [pyproject.toml] [.ci/lowest-constraints.txt]
Exit 1, with one line per problem, when a requirement with a lower bound (>= or ==) has no pin in the file or
a pin other than that bound, when the pin is excluded by the requirement (!=, <, <=), or when an installed
distribution is not at its pin (run it with the lowest-versions venv's python after the install).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    pyproject = Path(args[0]) if args else root / "pyproject.toml"
    constraints = Path(args[1]) if len(args) > 1 else root / ".ci" / "lowest-constraints.txt"
    project = tomllib.loads(pyproject.read_text())["project"]
    own = canonicalize_name(project["name"])
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    pins: dict[str, Version] = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
            if not m:
                print(f"{constraints.name}: not a plain NAME==VERSION pin: {line}")
                return 1
            pins[canonicalize_name(m.group(1))] = Version(m.group(3))
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name == own:
            continue  # fashionmlp[sweep] inside dev
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if not floors:
            problems.append(f"{req}: no lower bound declared")
            continue
        floor = max(floors)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{req}: no pin in {constraints.name} (want {req.name}=={floor})")
        elif pin != floor:
            problems.append(f"{req}: {constraints.name} pins {pin}, the declared floor is {floor}")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req}: the floor {floor} is excluded by the requirement itself")
    if "--installed" in sys.argv:
        for name, pin in pins.items():
            try:
                got = Version(metadata.version(name))
            except metadata.PackageNotFoundError:
                problems.append(f"{name}: pinned {pin} but not installed")
                continue
            if got.public != pin.public:  # torch 2.4.0+cu121 counts as 2.4.0
                problems.append(f"{name}: pinned {pin} but {got} is installed")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
