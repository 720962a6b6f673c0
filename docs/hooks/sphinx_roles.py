"""A Griffe extension for the API reference: the docstrings' Sphinx roles (``:class:`~a.B```,
``:func:`a.f```), which mkdocstrings would print as they are, shown as code (``B``, ``a.f``) as
Sphinx shows them. The docstrings stay as they are: ``help()`` and IDEs read them too."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
