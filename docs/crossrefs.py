"""A griffe extension: our docstrings, written with reST habits, rendered as Markdown.

The docstrings use single backticks for a name (`ISR`, `isr.adapters.Entry`, `ISR.stats`)
and double backticks for a literal (``memory://``). Markdown shows both as code; this
extension turns a single-backtick name that resolves, in the docstring's own scope, to an
object the API reference shows into a cross-reference to it (``[`ISR`][isr.ISR]``, which
mkdocs-autorefs links). A name it cannot place (a private helper, the standard library)
stays plain code. It also turns reST's ``::`` before a literal block into a colon (the
indented block after it is a code block in Markdown too), and reads the ``#:`` comment
above a module attribute (Sphinx's convention, which griffe ignores) as its docstring.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

__all__ = ["CrossRefs", "public_paths"]

# `name` or `dotted.name` or `name()`, not inside a double-backtick span.
_NAME = re.compile(r"(?<!`)`(?P<name>[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(?P<call>\(\))?`(?!`)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _is_public_module(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


def public_paths(package: griffe.Module) -> dict[str, str]:
    """Canonical path -> the public path the reference shows it under, for every name in a
    public module's ``__all__`` (the first public module naming it wins, outermost first)."""
    found: dict[str, str] = {}
    modules = [package, *_submodules(package)]
    modules.sort(key=lambda module: module.path.count("."))
    for module in modules:
        if not _is_public_module(module.path):
            continue
        for export in module.exports or ():
            name = export if isinstance(export, str) else export.name
            member = module.members.get(name)
            if member is None:
                continue
            canonical = member.target_path if isinstance(member, griffe.Alias) else member.path
            found.setdefault(canonical, f"{module.path}.{name}")
            found.setdefault(f"{module.path}.{name}", f"{module.path}.{name}")
    return found


def _submodules(module: griffe.Module) -> list[griffe.Module]:
    out: list[griffe.Module] = []
    for member in module.members.values():
        if isinstance(member, griffe.Module) and not isinstance(member, griffe.Alias):
            out.append(member)
            out.extend(_submodules(member))
    return out


class CrossRefs(griffe.Extension):
    """Rewrites each docstring of the package once it is loaded (see the module's text)."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        filepath = attr.filepath
        if attr.docstring is not None or attr.lineno is None or not isinstance(filepath, Path):
            return
        try:
            lines = attr.lines_collection[filepath]
        except KeyError:
            return
        comment: list[str] = []
        index = attr.lineno - 2  # the line above the attribute, counted from 0
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].removeprefix(" "))
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
            )

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.public = public_paths(pkg)
        self.package = pkg
        for obj in self._objects(pkg, set()):
            if obj.docstring is not None:
                obj.docstring.value = self.rewrite(obj.docstring.value, obj)

    def _objects(self, obj: griffe.Object, seen: set[str]) -> list[griffe.Object]:
        if obj.path in seen:
            return []
        seen.add(obj.path)
        out = [obj]
        for member in obj.members.values():
            if not isinstance(member, griffe.Alias):
                out.extend(self._objects(member, seen))
        return out

    def rewrite(self, text: str, scope: griffe.Object) -> str:
        lines: list[str] = []
        fenced = False
        for line in text.split("\n"):
            if _FENCE.match(line):
                fenced = not fenced
            elif not fenced and not line.startswith("    "):
                line = _NAME.sub(lambda match: self._link(match, scope), line)
                if line.endswith("::"):
                    line = line[:-1].rstrip(":") + ":" if line.strip() != "::" else ""
            lines.append(line)
        return "\n".join(lines)

    def _link(self, match: re.Match[str], scope: griffe.Object) -> str:
        name, call = match["name"], match["call"] or ""
        target = self._target(name, scope)
        if target is None:
            return match[0]
        return f"[`{name}{call}`][{target}]"

    def _target(self, name: str, scope: griffe.Object) -> str | None:
        """The public path ``name`` stands for, seen from ``scope``; None when the reference
        does not show it."""
        head, _, rest = name.partition(".")
        candidates = [name]
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, ValueError, KeyError):
            resolved = None
        if resolved is not None:
            candidates.insert(0, f"{resolved}.{rest}" if rest else resolved)
        for candidate in candidates:
            public = self._public(candidate)
            if public is not None:
                return public
        return None

    def _public(self, path: str) -> str | None:
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            base = self.public.get(".".join(parts[:cut]))
            if base is None:
                continue
            tail = parts[cut:]
            if any(part.startswith("_") for part in tail):
                return None
            full = ".".join([base, *tail])
            return full if self._exists(full) else None
        return None

    def _exists(self, path: str) -> bool:
        if path == self.package.path:
            return True
        try:
            self.package[path.removeprefix(f"{self.package.path}.")]
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return False
        return True
