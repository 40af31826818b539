"""Vowpal Wabbit's text format for tailormail decisions (``--cb_explore_adf`` examples).

Each decision is one multi-line VW example: a ``shared`` line with the recipient's context
(namespace ``U``; a nested dict ``geo`` becomes namespace ``U_geo``) and one line per variant
(namespace ``A``: the variant's key and features). Namespaces that share a first letter
share interactions, so ``--interactions UA`` crosses all context with all variant features.
"""

from __future__ import annotations

import functools
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
    return _escape_str(str(text))


@functools.lru_cache(maxsize=1 << 16)
def _escape_str(text: str) -> str:
    # Names and categorical values repeat across decisions: escape each once.
    return text.translate(_ESCAPES)


def _is_mapping(value: object) -> bool:
    kind = type(value)
    return kind is dict or (kind not in _PLAIN and isinstance(value, Mapping))


_PLAIN = frozenset({str, float, int, bool, type(None)})


def _tokens(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """VW feature tokens: ``name=value`` for categories, ``name:value`` for numbers."""
    tokens: list[str] = []
    append = tokens.append
    for raw_name, value in values.items():
        kind = type(value)
        if kind is float:  # the common cases first, without abstract isinstance checks
            if math.isfinite(value):  # VW cannot parse nan/inf
                append(f"{_escape_str(prefix + str(raw_name))}:{value!r}")
        elif kind is str:
            append(f"{_escape_str(prefix + str(raw_name))}={_escape_str(value)}")
        elif value is None:
            continue
        elif _is_mapping(value):  # deeper nesting flattens into dotted names
            tokens += _tokens(value, f"{prefix}{raw_name}.")
        elif kind is bool:
            append(f"{escape(prefix + str(raw_name))}={'true' if value else 'false'}")
        elif isinstance(value, numbers.Real):
            if math.isfinite(float(value)):
                append(f"{escape(prefix + str(raw_name))}:{float(value)!r}")
        elif isinstance(value, list | tuple | set | frozenset):
            name = escape(prefix + str(raw_name))
            tokens += [f"{name}={escape(item)}" for item in value]
        else:
            append(f"{escape(prefix + str(raw_name))}={escape(value)}")
    return tokens


def _namespaces(index: str, values: Mapping[str, Any]) -> str:
    """Flat features in namespace ``index``; each nested dict in ``index_<name>``."""
    nested = [name for name, value in values.items() if _is_mapping(value)]
    if not nested:
        return " ".join([f"|{index}", *_tokens(values)])
    flat = {name: value for name, value in values.items() if name not in nested}
    parts = [" ".join([f"|{index}", *_tokens(flat)])]
    for name in nested:
        parts.append(" ".join([f"|{index}_{escape(name)}", *_tokens(values[name])]))
    return " ".join(parts)


@functools.lru_cache(maxsize=4096)
def _variant_line_cached(key: str, features: tuple[tuple[str, Any], ...]) -> str:
    return _namespaces(VARIANT_NAMESPACE, {**dict(features), "key": key})


def _variant_line(variant: Variant) -> str:
    """The variant's line (namespace ``A``: its features and its key), cached when its
    features are plain values: the same variants are offered decision after decision."""
    features = variant.features
    if all(type(value) in _PLAIN for value in features.values()):
        return _variant_line_cached(variant.key, tuple(features.items()))
    return _namespaces(VARIANT_NAMESPACE, {**features, "key": variant.key})


def vw_example(
    context: Context, variants: Sequence[Variant], label: tuple[str, float, float] | None = None
) -> list[str]:
    """The multi-line VW example for a decision; ``label`` is ``(chosen, cost, probability)``."""
    variant_keys(variants, "vw")
    lines = ["shared " + _namespaces(CONTEXT_NAMESPACE, context)]
    for variant in variants:
        line = _variant_line(variant)  # the key always identifies the arm
        if label is not None and variant.key == label[0]:
            line = f"0:{label[1]!r}:{label[2]!r} {line}"
        lines.append(line)
    return lines
