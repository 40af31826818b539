"""Vowpal Wabbit's text format for tailormail decisions (``--cb_explore_adf`` examples).

Each decision is one multi-line VW example: a ``shared`` line with the recipient's context
(namespace ``U``; a nested dict ``geo`` becomes namespace ``U_geo``) and one line per variant
(namespace ``A``: the variant's key and features). Namespaces that share a first letter
share interactions, so ``--interactions UA`` crosses all context with all variant features.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from engine import Context, Variant
from engine.sampling import variant_keys

CONTEXT_NAMESPACE = "U"
VARIANT_NAMESPACE = "A"

# VW's text format splits on whitespace, "|" and ":"; we split on "=": percent-encode them.
_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in "% \t\n\r\v\f|:="})


def escape(text: object) -> str:
    """``text`` as one VW token, injectively (``%`` itself is escaped too)."""
    return str(text).translate(_ESCAPES)


def _tokens(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """VW feature tokens: ``name=value`` for categories, ``name:value`` for numbers."""
    tokens: list[str] = []
    for raw_name, value in values.items():
        name = prefix + str(raw_name)
        if value is None:
            continue
        if isinstance(value, Mapping):  # deeper nesting flattens into dotted names
            tokens += _tokens(value, f"{name}.")
        elif isinstance(value, bool):
            tokens.append(f"{escape(name)}={'true' if value else 'false'}")
        elif isinstance(value, numbers.Real):
            if math.isfinite(float(value)):  # VW cannot parse nan/inf
                tokens.append(f"{escape(name)}:{float(value)!r}")
        elif isinstance(value, list | tuple | set | frozenset):
            tokens += [f"{escape(name)}={escape(item)}" for item in value]
        else:
            tokens.append(f"{escape(name)}={escape(value)}")
    return tokens


def _namespaces(index: str, values: Mapping[str, Any]) -> str:
    """Flat features in namespace ``index``; each nested dict in ``index_<name>``."""
    flat = {name: value for name, value in values.items() if not isinstance(value, Mapping)}
    parts = [" ".join([f"|{index}", *_tokens(flat)])]
    for name, value in values.items():
        if isinstance(value, Mapping):
            parts.append(" ".join([f"|{index}_{escape(name)}", *_tokens(value)]))
    return " ".join(parts)


def vw_example(
    context: Context, variants: Sequence[Variant], label: tuple[str, float, float] | None = None
) -> list[str]:
    """The multi-line VW example for a decision; ``label`` is ``(chosen, cost, probability)``."""
    variant_keys(variants, "vw")
    lines = ["shared " + _namespaces(CONTEXT_NAMESPACE, context)]
    for variant in variants:
        features = {**variant.features, "key": variant.key}  # the key always identifies the arm
        line = _namespaces(VARIANT_NAMESPACE, features)
        if label is not None and variant.key == label[0]:
            line = f"0:{label[1]!r}:{label[2]!r} {line}"
        lines.append(line)
    return lines
