"""The documentation: every public name has a docstring, and every public module has its page
in the API reference (``docs/api/``, rendered by mkdocstrings from ``::: module`` lines).
``make docs`` builds the site with ``mkdocs build --strict``."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types

import pytest

import sparkdl
from tests.helpers import ROOT

# The modules whose names are public: their ``__all__`` (or, without one, the classes and
# functions they define whose names do not start with "_").
PUBLIC_MODULES = [
    "sparkdl", "sparkdl.layers", "sparkdl.optimizers", "sparkdl.optimizers.schedules", "sparkdl.losses",
    "sparkdl.metrics", "sparkdl.callbacks", "sparkdl.models", "sparkdl.saving", "sparkdl.utils", "sparkdl.errors",
    "sparkdl.spark", "sparkdl.ml", "sparkdl.data", "sparkdl.data.samples", "sparkdl.data.synthetic",
    "sparkdl.data.cifar10", "sparkdl.dashboard",
]
# sparkdl's modules and packages that only sparkdl itself imports.
INTERNAL_MODULES = {"sparkdl.engine", "sparkdl.distributed"}


def public_names(module: types.ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__]


def public_methods(cls: type):
    """(name, object) of the public methods and properties a sparkdl class has, its own or
    inherited from another sparkdl class."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
        if owner is None or not owner.__module__.startswith("sparkdl"):
            continue
        attr = vars(owner)[name]
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            yield name, attr
        elif inspect.isfunction(attr):
            yield name, getattr(cls, name)


def undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if (module.__doc__ or "").strip() else [module_name]
    for name in public_names(module):
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants, type aliases and submodules (documented on their own)
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(obj) and obj.__module__.startswith("sparkdl"):
            for method, attr in public_methods(obj):
                if not (inspect.getdoc(attr) or "").strip():
                    missing.append(f"{module_name}.{name}.{method}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name):
    missing = undocumented(module_name)
    assert not missing, f"{len(missing)} public names without a docstring: {', '.join(missing)}"


def documented_modules() -> set[str]:
    return {found for page in (ROOT / "docs" / "api").glob("*.md")
            for found in re.findall(r"^:::\s+([\w.]+)", page.read_text(encoding="utf-8"), flags=re.MULTILINE)}


def test_every_public_module_has_its_api_page():
    missing = sorted(set(PUBLIC_MODULES) - documented_modules())
    assert not missing, f"public modules without a '::: module' line under docs/api/: {', '.join(missing)}"


def test_every_top_level_module_is_public_or_internal():
    """A new module under sparkdl/ is listed above as public (and so needs its API page and
    docstrings) or as internal."""
    top = {f"sparkdl.{info.name}" for info in pkgutil.iter_modules(sparkdl.__path__)}
    unlisted = sorted(top - set(PUBLIC_MODULES) - INTERNAL_MODULES)
    assert not unlisted, f"modules neither public nor internal in tests/test_docs.py: {', '.join(unlisted)}"


def test_every_api_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(f"api/{page.name}" for page in (ROOT / "docs" / "api").glob("*.md"))
    assert [page for page in pages if page not in nav] == []


def test_readme_starts_with_the_two_commands_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert block and readme.index("```bash") < readme.index("\n## ")
    assert [line.split("#")[0].strip() for line in block.group(1).splitlines()] == ["make demo", "make test"]
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets and [t for t in targets if "://" not in t and not (ROOT / t).exists()] == []
