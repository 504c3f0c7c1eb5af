"""What an install of the built package (a wheel, the Docker image) gets: pyproject.toml's dependencies name every
distribution the package and its instance files import, pinned as constraints.txt pins them, and none only the
development extra installs; the Dockerfile's processes import the installed package. The wheel itself, installed into
a fresh virtualenv and run from an empty folder, is checked by scripts/check_wheel.sh (a few minutes: .ci/run)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "churn_assets"
INSTANCE_FILES = (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.yaml")


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized as PEP 503 does (``SQLAlchemy==2.1.9`` → ``sqlalchemy``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imported_modules() -> dict[str, str]:
    """Each top-level module the package imports (anywhere, a function's lazy import too) or an instance file names
    as a storage's, launcher's or coordinator's ``module``, with one place that imports it."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    for path in INSTANCE_FILES:
        for block in yaml.safe_load(path.read_text()).values():
            if isinstance(block, dict) and "module" in block:
                found.setdefault(block["module"].split(".")[0], str(path.relative_to(ROOT)))
    return found


def _third_party(modules: dict[str, str]) -> dict[str, str]:
    """The distribution of each module that is neither the standard library's nor churn_assets', with its importer."""
    distributions = packages_distributions()
    owners: dict[str, str] = {}
    for module, where in modules.items():
        if module in sys.stdlib_module_names or module == "churn_assets":
            continue
        assert module in distributions, f"{where} imports {module}, which no installed distribution provides"
        for distribution in distributions[module]:
            owners.setdefault(_name(distribution), f"{module} ({where})")
    return owners


def test_every_distribution_the_package_imports_is_a_dependency():
    declared = {_name(requirement) for requirement in _project()["dependencies"]}
    undeclared = {name: importer for name, importer in _third_party(_imported_modules()).items()
                  if name not in declared}
    assert not undeclared, (
        f"pyproject.toml's [project].dependencies lack {undeclared}: an install of the wheel or the image gets them "
        "only while another dependency happens to pull them in. Add each, pinned as constraints.txt pins it."
    )


def test_no_development_dependency_is_imported_at_run_time():
    dev = {_name(requirement) for requirement in _project()["optional-dependencies"]["dev"]}
    used = {name: importer for name, importer in _third_party(_imported_modules()).items() if name in dev}
    assert not used, f"the package imports {used}, which only the dev extra installs: a deployment lacks it"


def test_dependencies_are_pinned_as_constraints_pins_them():
    constraints = {
        _name(line): line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    }
    requirements = [r.split(";")[0].strip() for r in _project()["dependencies"]]
    requirements += _project()["optional-dependencies"]["dev"]
    for requirement in requirements:
        pin = requirement.split("#")[0].strip()
        assert "==" in pin, f"pyproject.toml's {pin!r} is not pinned with =="
        assert _name(pin) in constraints, f"constraints.txt has no pin for pyproject.toml's {pin!r}"
        assert pin.split("==")[1] == constraints[_name(pin)].split("==")[1], (
            f"pyproject.toml pins {pin!r}, constraints.txt {constraints[_name(pin)]!r}: make them agree"
        )


def test_the_build_tools_are_pinned():
    """The wheel (scripts/check_wheel.sh) and the image (the Dockerfile's pip install) are built by the setuptools
    and wheel pyproject.toml names: unpinned, a new release of either could change what a build holds."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert {_name(r) for r in requires} >= {"setuptools"}, requires
    assert all("==" in r for r in requires), f"pyproject.toml's build-system requires {requires}: pin each with =="


def _image_files() -> tuple[str, list[str]]:
    """The Dockerfile's last WORKDIR and where each COPY puts its sources, as absolute paths (a relative
    destination is under the WORKDIR in force at that line)."""
    workdir, destinations = "/", []
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "WORKDIR":
            workdir = words[1] if words[1].startswith("/") else f"{workdir.rstrip('/')}/{words[1]}"
        elif words[0] == "COPY":
            *sources, destination = [w for w in words[1:] if not w.startswith("--")]
            if not destination.startswith("/"):
                destination = f"{workdir.rstrip('/')}/{destination.removeprefix('./')}"
            into_folder = destination.endswith("/") or len(sources) > 1
            destinations += [f"{destination.rstrip('/')}/{Path(s).name}" if into_folder else destination
                             for s in sources]
    return workdir, destinations


def test_the_image_runs_the_installed_package_not_a_copy_in_its_workdir():
    """The code server (the image's command) runs in the WORKDIR, and ``dagster code-server start -m`` puts its
    working directory first on sys.path: a churn_assets/ folder there is imported instead of site-packages'."""
    workdir, destinations = _image_files()
    shadowing = [d for d in destinations if d == f"{workdir.rstrip('/')}/churn_assets"]
    assert not shadowing, (
        f"the Dockerfile copies {shadowing} into its WORKDIR {workdir}: the code server would import that "
        "source tree, not the installed package; build and install it from a folder outside the WORKDIR"
    )
