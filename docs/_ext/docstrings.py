"""A Griffe extension used only by the documentation build.

The source docstrings are written for both Sphinx-minded readers and ``help()``; a few of their
reStructuredText constructs do not render in Markdown. Before mkdocstrings renders anything,
this extension rewrites, in memory only:

* roles such as ``:class:`Task```, ``:func:`~spice_env.corpus.load_corpus``` — into a
  cross-reference when the target is rendered on the site, else into inline code;
* simple reStructuredText tables (``=====  =====`` borders) — into Markdown tables;
* pydantic fields without a docstring, ``name: T = Field(..., description="...")`` — the
  description becomes the field's docstring, so the field is listed.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")


class SpiceDocstrings(griffe.Extension):
    """Rewrite reStructuredText roles and tables, and document pydantic fields."""

    def __init__(self, rendered: Sequence[str] = ()) -> None:
        super().__init__()
        self.rendered = tuple(rendered)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader | None = None,
                   **kwargs: Any) -> None:
        roots = {pkg.path: pkg}
        if loader is not None:  # packages loaded earlier, for references across packages
            roots.update(loader.modules_collection.members)
        for obj in _walk(pkg):
            if obj.docstring is None and obj.is_attribute:
                description = _field_description(obj)
                if description:
                    obj.docstring = griffe.Docstring(description, parent=obj)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                text = _tables(obj.docstring.value)
                text = _ROLE.sub(functools.partial(self._role, obj, roots), text)
                if text != obj.docstring.value:
                    obj.docstring = griffe.Docstring(
                        text, lineno=obj.docstring.lineno, endlineno=obj.docstring.endlineno,
                        parent=obj,
                    )

    # -- roles ----------------------------------------------------------------------------------

    def _role(self, scope: griffe.Object, roots: dict[str, Any], match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2).strip().removesuffix("()")
        label = target.rsplit(".", 1)[-1] if short else target
        path = _resolve(scope, roots, target)
        if path is not None and self._is_rendered(roots, path):
            return f"[`{label}`][{path}]"
        return f"`{label}`"

    def _is_rendered(self, roots: dict[str, Any], path: str) -> bool:
        if not any(path == m or path.startswith(m + ".") for m in self.rendered):
            return False
        if any(part.startswith("_") for part in path.split(".")):
            return False
        obj = _lookup(roots, path)
        if obj is None or obj.is_alias:
            return False
        # the target and every object between it and its rendered module must be shown
        while obj is not None and obj.path not in self.rendered:
            if obj.docstring is None:
                return False
            obj = obj.parent
        return True


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _lookup(roots: dict[str, Any], path: str) -> Any:
    head, _, rest = path.partition(".")
    root = roots.get(head)
    if root is None:
        return None
    if not rest:
        return root
    try:
        return root[rest]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(scope: griffe.Object, roots: dict[str, Any], target: str) -> str | None:
    if _lookup(roots, target) is not None:
        return target
    head, _, rest = target.partition(".")
    try:
        base = scope.resolve(head)
    except griffe.NameResolutionError:
        return None
    path = f"{base}.{rest}" if rest else base
    return path if _lookup(roots, path) is not None else None


# -- tables ---------------------------------------------------------------------------------------


def _tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        if border is None:
            out.append(lines[i])
            i += 1
            continue
        borders = [i]
        j = i + 1
        while j < len(lines) and len(borders) < 3:
            if lines[j].strip() == lines[i].strip():
                borders.append(j)
                if j + 1 >= len(lines) or not lines[j + 1].strip():
                    break  # a border followed by a blank line closes the table
            j += 1
        if len(borders) < 2:
            out.append(lines[i])
            i += 1
            continue
        out.extend(_markdown_table(lines[i : borders[-1] + 1], lines[i]))
        i = borders[-1] + 1
    return "\n".join(out)


def _markdown_table(block: list[str], border: str) -> list[str]:
    starts = [m.start() for m in re.finditer(r"=+", border)]
    rows: list[list[str]] = []
    header: list[str] | None = None
    for line in block[1:]:
        if _BORDER.match(line):
            if header is None and rows:
                header, rows = rows[0], []
            continue
        if not line.strip():
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if rows and not cells[0]:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    if header is None:
        header, rows = rows[0], rows[1:]
    indent = border[: len(border) - len(border.lstrip())]

    def fmt(cells: list[str]) -> str:
        return indent + "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return ["", fmt(header), indent + "|" + "---|" * len(header), *map(fmt, rows), ""]


# -- pydantic fields ------------------------------------------------------------------------------


def _field_description(attr: griffe.Object) -> str | None:
    value = getattr(attr, "value", None)
    if not isinstance(value, griffe.ExprCall) or str(value.function).split(".")[-1] != "Field":
        return None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "description":
            try:
                text = ast.literal_eval(str(argument.value))
            except (ValueError, SyntaxError):
                return None
            return text if isinstance(text, str) else None
    return None
