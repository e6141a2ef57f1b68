"""The one Jinja environment every backend renders its generated source with.

Template folders are searched in order (``backends/triton/templates``, ``backends/cstyle/templates``);
template names are unique across them. StrictUndefined: a template variable the emitter forgot to pass
is an error, not an empty string.

Generated source is code, so HTML autoescaping does not apply; instead two rules keep user-derived text
(file paths, kernel names, constexpr reprs) from becoming code:

* every ``{{ value }}`` must render as one line (``finalize`` raises otherwise): a value can never start a new
  statement, directive or import;
* user text reaches a template only through the ``comment`` filter, which quotes and escapes it (``ascii``):
  no line break of any kind, no trailing backslash (a C line splice), only printable ASCII.
Identifiers never come from user text directly: see ``backends/naming.py``.
"""
from __future__ import annotations

import os

import jinja2

_HERE = os.path.dirname(__file__)
TEMPLATE_DIRS = [os.path.join(_HERE, "triton", "templates"), os.path.join(_HERE, "cstyle", "templates")]

# Everything Python's tokenizer, str.splitlines or a C preprocessor could take as the end of a line.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def comment(value) -> str:
    """``value`` as text safe inside a one-line ``#`` or ``//`` comment: a quoted, escaped ASCII literal."""
    return ascii(str(value))


def _one_line(value):
    text = "" if value is None else str(value)
    if any(c in _LINE_BREAKS for c in text):
        raise ValueError(f"generated source: a template value must be one line, got {text[:200]!r}")
    return text


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIRS), trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=True, undefined=jinja2.StrictUndefined, finalize=_one_line,
                         autoescape=False)
ENV.filters["comment"] = comment


def render(template: str, **context) -> str:
    return ENV.get_template(template).render(**context)
