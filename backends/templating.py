"""The one Jinja environment every backend renders its generated source with.

Template folders are searched in order (``backends/triton/templates``, ``backends/cstyle/templates``);
template names are unique across them. StrictUndefined: a template variable the emitter forgot to pass
is an error, not an empty string.
"""
from __future__ import annotations

import os

import jinja2

_HERE = os.path.dirname(__file__)
TEMPLATE_DIRS = [os.path.join(_HERE, "triton", "templates"), os.path.join(_HERE, "cstyle", "templates")]

ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIRS), trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render(template: str, **context) -> str:
    return ENV.get_template(template).render(**context)
