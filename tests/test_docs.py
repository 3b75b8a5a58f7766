"""The documentation site's API reference: every public name is on a reference page, with a
docstring (MkDocs' strict build, in the test command, checks links and references)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import isr

griffe = pytest.importorskip("griffe", reason="the docs extra builds the reference")

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "pages" / "reference"

#: Public names without a docstring yet, in modules this change could not edit (type aliases
#: and constants of isr.asgi, isr.wsgi, isr.webhook): their reference pages describe them in
#: prose meanwhile. Each wants a ``#:`` comment above its assignment, then leaves this list.


def public_modules() -> dict[str, ModuleType]:
    """``isr`` and every module under it (``isr.adapters`` included) whose dotted name has
    no part starting with an underscore."""
    found = {"isr": isr}
    for info in pkgutil.walk_packages(isr.__path__, "isr."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        found[info.name] = importlib.import_module(info.name)
    return found


def public_names() -> list[str]:
    names = []
    for name, module in public_modules().items():
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} is public: give it an __all__"
        names += [f"{name}.{export}" for export in exported]
    return names


def directives() -> dict[str, str]:
    """Each ``::: identifier`` of the reference pages that shows its members (not one with
    ``members: false``), and the page it is on."""
    found = {}
    for page in REFERENCE.glob("*.md"):
        blocks = re.findall(r"^::: *([\w.]+)\n((?:[ \t]+.*\n)*)", page.read_text(), re.MULTILINE)
        for identifier, options in blocks:
            if not re.search(r"^\s*members:\s*false\s*$", options, re.MULTILINE):
                found[identifier] = page.name
    return found


def test_the_public_modules_are_the_expected_ones() -> None:
    """So that the checks below cannot pass by finding nothing."""
    assert {"isr", "isr.asgi", "isr.wsgi", "isr.webhook", "isr.cdn", "isr.cli", "isr.adapters",
            "isr.adapters.memory", "isr.adapters.disk", "isr.adapters.redis",
            "isr.adapters.l1"} <= set(public_modules())  # fmt: skip
    assert len(public_names()) > 80


def test_every_public_name_is_in_the_api_reference() -> None:
    shown = directives()
    missing = [
        name
        for name in public_names()
        if name not in shown and name.rpartition(".")[0] not in shown
    ]
    assert missing == [], f"add them to a page under {REFERENCE.relative_to(ROOT)}"


def test_every_public_name_has_a_docstring() -> None:
    """Read as the site reads them: griffe, with docs/crossrefs.py (which takes a ``#:``
    comment above an attribute as its docstring)."""
    package = griffe.load(
        "isr",
        search_paths=[str(ROOT)],
        extensions=griffe.load_extensions(f"{ROOT / 'docs' / 'crossrefs.py'}:CrossRefs"),
        resolve_aliases=True,
        resolve_external=False,
    )
    undocumented = set()
    for name in public_names():
        target = package[name.removeprefix("isr.")]
        if target.docstring is None or not target.docstring.value.strip():
            undocumented.add(name)
    assert undocumented == set(), "give each a docstring (or a #: comment)"


def test_the_readmes_links_point_to_files_of_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [target for target in targets if "://" not in target]
    assert len(local) >= 15  # the links into docs/
    assert [t for t in local if not (ROOT / t).is_file()] == []
