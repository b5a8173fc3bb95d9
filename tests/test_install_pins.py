"""What a fresh clone installs is what was tested (issue 16, item 11): numba and llvmlite, whose internals the
kernels use, have upper bounds; the README's blocks install with constraints.txt; this environment holds the
pinned versions, so the suite that passes here passed on exactly them."""
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def dependencies() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def pins() -> dict:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[name.lower().replace("_", "-")] = version
    return found


def test_numba_and_llvmlite_are_bounded_above_and_installed_within_the_bounds():
    deps = dependencies()
    for name in ("numba", "llvmlite"):
        assert name in deps, f"{name} must be a declared dependency"
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in deps[name].specifier), deps[name]
        assert deps[name].specifier.contains(metadata.version(name)), (name, metadata.version(name))


def test_readme_blocks_install_with_the_constraints():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 2
    for block in blocks:
        assert "-c constraints.txt" in block


def test_this_environment_holds_the_pinned_versions():
    pinned = pins()
    for name in ("numba", "llvmlite", "numpy", "torch", "onnx", "onnxruntime", "onnxscript"):
        assert name in pinned, name
        installed = Version(metadata.version(name)).public  # 2.13.0+cpu is torch 2.13.0
        assert installed == Version(pinned[name]).public, (name, installed, pinned[name])
    for name, requirement in dependencies().items():
        assert name.lower() in pinned and requirement.specifier.contains(pinned[name.lower()]), name
