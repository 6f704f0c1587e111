"""Help text from docstrings: docstrings are written for the code's readers (reStructuredText roles
and literals); help, tables and error messages show them to users without that markup."""

from __future__ import annotations

import re

_MARKUP = re.compile(r":[a-z:]+:`~?([^`]*)`|``([^`]*)``")


def plain(text: str) -> str:
    """Docstring text without reStructuredText roles and literals (``:class:`X``` and double backticks)."""
    return _MARKUP.sub(lambda match: match.group(2) if match.group(1) is None else match.group(1).split(".")[-1], text)
