"""Identifiers in generated source (Triton and C), in disjoint namespaces, so no user name can collide
with a generated one, with another user name, or with what a template or prelude defines.

Every identifier a backend emits is one of:

* a **user parameter**: ``s_<n>`` (scalar), ``b_<n>`` (the int a bool scalar travels as), or
  ``t_<n>`` followed by one role suffix (``_ptr``, ``_shape<d>``, ``_stride<d>``, ``_wstride<d>``);
* the **kernel symbol**: ``k_<n>``;
* a **generated local**: ``v<counter>`` or ``v<counter>_<hint>`` (a counter, then an ASCII hint taken from
  the user's variable name for readability);
* a **fixed name** of the emitter, the template or the prelude: ``tl``, ``triton``, ``range``, ``float``,
  ``_jit``, ``_tk_combine<i>`` in Triton; ``tk_*`` / ``TK_*`` helpers, typedefs and macros, and ``_x``-style
  loop temporaries in C. None of them starts with ``s_``, ``b_``, ``t_``, ``k_`` or ``v<digit>``.

``<n>`` is the user's name when it is ASCII and at most ``MAX_PLAIN`` characters. Any other name (unicode,
which NVRTC rejects, or long, which Triton's cache file names and PoCL's symbol handling cannot take) becomes
``x_<ascii prefix>_<hash>`` in the same namespace (so ``sx_...``, ``tx_...``, ``kx_...``): the second letter
``x`` keeps it apart from every plain name. Tensor names stay distinct with their role suffixes because
each suffix has exactly one underscore, at its start: ``t_A`` + suffix == ``t_B`` + suffix' needs one
suffix to be a proper suffix of the other that starts with ``_``, and none is.
"""
from __future__ import annotations

import hashlib

MAX_PLAIN = 48


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def ascii_hint(text: str, limit: int = 24) -> str:
    """``text`` reduced to ASCII letters, digits and underscores (readability only; never relied on for
    uniqueness)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c == "_" else "_" for c in (text or ""))[:limit]


def _plain(name: str) -> bool:
    return (bool(name) and name.isascii() and len(name) <= MAX_PLAIN and (name[0].isalpha() or name[0] == "_")
            and all(c.isalnum() or c == "_" for c in name))


def user_ident(role: str, name: str) -> str:
    """The identifier of user name ``name`` in namespace ``role`` (one lower-case letter)."""
    if _plain(name):
        return f"{role}_{name}"
    return f"{role}x_{ascii_hint(name)}_{_hash(name)}"


def scalar_param(name: str) -> str:
    return user_ident("s", name)


def bool_param(name: str) -> str:
    return user_ident("b", name)


def tensor_base(name: str) -> str:
    """The prefix of a tensor parameter's identifiers: add ``_ptr``, ``_shape<d>``, ``_stride<d>`` or
    ``_wstride<d>``."""
    return user_ident("t", name)


def kernel_symbol(name: str) -> str:
    """The kernel's function name in generated source and in the compiled binary."""
    return user_ident("k", name)


def local(counter: int, hint: str = "") -> str:
    """A generated local: unique by ``counter`` (the caller's own), readable by ``hint``."""
    h = ascii_hint(hint)
    return f"v{counter}_{h}" if h else f"v{counter}"
