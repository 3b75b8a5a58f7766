"""Key and tag templates, compiled to Python source for the decorator's generated wrapper.

A template is ``str.format`` syntax over the decorated function's parameter names:
``"post:{slug}"``, ``"page:{path}:{lang}"``, ``"user:{self.id}"``, ``"item:{ids[0]}"``,
``"price:{amount:.2f}"``. It is checked against the function's signature once, at decoration
time, and turned into an f-string expression, so formatting a key costs what an f-string costs.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # CPython's own helper behind str.format
import inspect
import string
from collections.abc import Mapping
from typing import Any

from ._errors import TemplateError

__all__ = ["RESERVED_PREFIX", "compile_template", "escape_literal"]

#: Names the generated wrapper uses for itself; a parameter may not start with this.
RESERVED_PREFIX = "_isr_"


def escape_literal(text: str) -> str:
    """Escape ``text`` for the literal part of a single-quoted f-string."""
    out = []
    for ch in text:
        if ch == "{":
            out.append("{{")
        elif ch == "}":
            out.append("}}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def compile_template(
    template: str,
    params: Mapping[str, inspect.Parameter],
    *,
    what: str,
    func_name: str,
    consts: dict[str, Any],
    used: set[str] | None = None,
) -> str:
    """Return an f-string expression equivalent to ``template.format(**bound_arguments)``.

    ``consts`` receives the format specs the expression refers to; ``used``, if given, the
    parameters the template names. Raises `TemplateError` naming the template, the field
    and the function's parameters when they do not match.
    """
    if not isinstance(template, str):
        raise TemplateError(
            f"{what} for {func_name}() must be a str template or a callable, "
            f"not {type(template).__name__}"
        )
    names = ", ".join(params) or "(none)"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{what} template {template!r} is not valid: {exc}") from None
    parts: list[str] = []
    for literal, field, spec, conversion in parsed:
        parts.append(escape_literal(literal))
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise TemplateError(
                f"{what} template {template!r} has a positional field "
                f"{{{field}}}; name a parameter of {func_name}() instead: {names}"
            )
        first, rest = _string.formatter_field_name_split(field)
        if first not in params:
            raise TemplateError(
                f"{what} template {template!r} names {{{first}}}, but {func_name}() "
                f"has no parameter {first!r}; its parameters are: {names}"
            )
        if used is not None:
            used.add(first)
        expr = first
        for is_attr, item in rest:
            if is_attr:
                if not item.isidentifier():
                    raise TemplateError(f"{what} template {template!r}: bad attribute {item!r}")
                expr += f".{item}"
            elif isinstance(item, int):
                expr += f"[{item}]"
            else:  # a string index: kept as a constant, no quotes inside the f-string
                name = f"{RESERVED_PREFIX}c{len(consts)}"
                consts[name] = item
                expr += f"[{name}]"
        if conversion:
            if conversion not in "rsa":
                raise TemplateError(
                    f"{what} template {template!r}: unknown conversion !{conversion}"
                )
            func = {"r": "repr", "s": "str", "a": "ascii"}[conversion]
            expr = f"{RESERVED_PREFIX}{func}({expr})"
        if spec:
            if "{" in spec:
                raise TemplateError(
                    f"{what} template {template!r}: nested fields in a format spec "
                    "are not supported"
                )
            name = f"{RESERVED_PREFIX}spec{len(consts)}"
            consts[name] = spec
            expr = f"{RESERVED_PREFIX}format({expr}, {name})"
        parts.append("{" + expr + "}")
    return "f'" + "".join(parts) + "'"
