"""The ``vw`` policy: a Vowpal Wabbit ``--cb_explore_adf`` contextual bandit.

Each decision is one multi-line VW example: a ``shared`` line with the recipient's context
(namespace ``U``; a nested dict ``geo`` becomes namespace ``U_geo``) and one line per variant
(namespace ``A``: the variant's key and features). Namespaces that share a first letter
share interactions, so the default ``--interactions UA`` crosses all context with all
variant features.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import vowpalwabbit

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.errors import ConfigError
from engine.hookspecs import PolicyFactory
from engine.sampling import decide

FORMAT = "tailormail-vw/1"
EXPLORATIONS = ("epsilon", "softmax", "bag", "cover")
CONTEXT_NAMESPACE = "U"
VARIANT_NAMESPACE = "A"

# VW's text format splits on whitespace, "|" and ":"; we split on "=": percent-encode them.
_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in "% \t\n\r\v\f|:="})


def _escape(text: object) -> str:
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
            tokens.append(f"{_escape(name)}={'true' if value else 'false'}")
        elif isinstance(value, numbers.Real):
            if math.isfinite(float(value)):  # VW cannot parse nan/inf
                tokens.append(f"{_escape(name)}:{float(value)!r}")
        elif isinstance(value, list | tuple | set | frozenset):
            tokens += [f"{_escape(name)}={_escape(item)}" for item in value]
        else:
            tokens.append(f"{_escape(name)}={_escape(value)}")
    return tokens


def _namespaces(index: str, values: Mapping[str, Any]) -> str:
    """Flat features in namespace ``index``; each nested dict in ``index_<name>``."""
    flat = {name: value for name, value in values.items() if not isinstance(value, Mapping)}
    parts = [" ".join([f"|{index}", *_tokens(flat)])]
    for name, value in values.items():
        if isinstance(value, Mapping):
            parts.append(" ".join([f"|{index}_{_escape(name)}", *_tokens(value)]))
    return " ".join(parts)


def vw_example(
    context: Context, variants: Sequence[Variant], label: tuple[str, float, float] | None = None
) -> list[str]:
    """The multi-line VW example for a decision; ``label`` is ``(chosen, cost, probability)``."""
    keys = [variant.key for variant in variants]
    if not keys:
        raise ValueError("vw policy: no variants to choose from")
    if len(set(keys)) != len(keys):
        raise ValueError(f"vw policy: duplicate variant keys in {keys!r}")
    lines = ["shared " + _namespaces(CONTEXT_NAMESPACE, context)]
    for variant in variants:
        features = {**variant.features, "key": variant.key}  # the key always identifies the arm
        line = _namespaces(VARIANT_NAMESPACE, features)
        if label is not None and variant.key == label[0]:
            line = f"0:{label[1]!r}:{label[2]!r} {line}"
        lines.append(line)
    return lines


class VowpalWabbitPolicy:
    """A contextual bandit over the campaign's variants, backed by a VW workspace.

    Parameters: ``exploration`` (epsilon, softmax, bag or cover), ``epsilon`` (for
    epsilon, bag and cover), ``lambda_`` (softmax), ``ensemble_size`` (bag and cover),
    ``interactions`` (namespace pairs such as ``"UA"``), ``learning_rate``, ``seed`` (VW's
    own random seed) and ``extra_args`` (passed to VW verbatim).
    """

    name = "vw"
    # What ``tailormail train`` tries, one setting at a time from the champion's settings
    # (engine.learning.challengers): exploration, learning rate, interactions, cb_type.
    search_space: dict[str, list[Any]] = {
        "epsilon": [0.02, 0.05, 0.2],
        "learning_rate": [0.1, 0.5, 2.0],
        "interactions": [["UA", "UUA"], []],
        "extra_args": ["--cb_type dr", "--cb_type mtr"],
    }

    def __init__(
        self,
        *,
        epsilon: float = 0.1,
        exploration: str = "epsilon",
        lambda_: float = 10.0,
        ensemble_size: int = 4,
        interactions: str | Sequence[str] = ("UA",),
        learning_rate: float | None = None,
        extra_args: str = "",
        seed: int | None = None,
    ) -> None:
        if exploration not in EXPLORATIONS:
            raise ConfigError(
                f"vw policy: exploration must be one of {EXPLORATIONS}, got {exploration!r}"
            )
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"vw policy: epsilon must be between 0 and 1, got {epsilon!r}")
        args = ["--cb_explore_adf", "--quiet"]
        if exploration == "softmax":
            args += ["--softmax", "--lambda", repr(float(lambda_))]
        else:
            if exploration in ("bag", "cover"):
                args += [f"--{exploration}", str(int(ensemble_size))]
            args += ["--epsilon", repr(float(epsilon))]
        for pair in [interactions] if isinstance(interactions, str) else interactions:
            if len(pair) < 2 or _escape(pair) != pair:
                raise ConfigError(f"vw policy: bad interactions entry {pair!r}")
            args += ["--interactions", pair]
        if learning_rate is not None:
            args += ["--learning_rate", repr(float(learning_rate))]
        if seed is not None:
            args += ["--random_seed", str(int(seed))]
        self.args = shlex.join(args + shlex.split(extra_args))
        self.model_version: str | None = None
        self.examples_learned = 0
        self._lock = threading.Lock()
        self._workspace: vowpalwabbit.Workspace | None = self._open(self.args)

    @staticmethod
    def _open(args: str, model_path: str | None = None) -> vowpalwabbit.Workspace:
        """A fresh VW workspace for ``args``, initialized from ``model_path`` if given."""
        arg_list = shlex.split(args) + (["--initial_regressor", model_path] if model_path else [])
        try:
            return vowpalwabbit.Workspace(arg_list=arg_list)
        except Exception as exc:  # VW reports bad options as RuntimeError or its own types
            raise ConfigError(f"vw policy: VW rejected arguments {args!r}: {exc}") from exc

    def _live(self) -> vowpalwabbit.Workspace:
        if self._workspace is None:
            raise RuntimeError("vw policy is closed")
        return self._workspace

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """Ask VW for a pmf over ``variants`` and sample it (deterministically for ``seed``)."""
        example = vw_example(context, variants)
        with self._lock:
            scores = self._live().predict(example)
        pmf = {variant.key: float(p) for variant, p in zip(variants, scores, strict=True)}
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Learn from logged decisions; VW minimizes costs, so the cost is ``-reward``."""
        for item in feedback:
            if not 0.0 < item.probability <= 1.0:
                raise ValueError(
                    f"vw policy: logged probability {item.probability!r} not in (0, 1]"
                )
            if item.chosen not in {variant.key for variant in item.variants}:
                raise ValueError(f"vw policy: chosen variant {item.chosen!r} is not offered")
            label = (item.chosen, -float(item.reward), float(item.probability))
            example = vw_example(item.context, item.variants, label)
            with self._lock:
                self._live().learn(example)
                self.examples_learned += 1

    def save(self) -> bytes:
        """A JSON header line (format, VW arguments, counters) followed by the VW model."""
        header = {"format": FORMAT, "args": self.args, "examples_learned": self.examples_learned}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.vw")
            with self._lock:
                self._live().save(path)
            with open(path, "rb") as model:
                return json.dumps(header).encode() + b"\n" + model.read()

    def load(self, data: bytes) -> None:
        """Replace the model (and its VW arguments) with one written by ``save``."""
        head, sep, model = data.partition(b"\n")
        try:
            header: Any = json.loads(head)
        except ValueError:
            header = None
        if not sep or not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("vw policy: not a saved vw policy")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.vw")
            with open(path, "wb") as out:
                out.write(model)
            workspace = self._open(str(header["args"]), path)
        with self._lock:
            old, self._workspace = self._workspace, workspace
            self.args = str(header["args"])
            self.examples_learned = int(header.get("examples_learned", 0))
        if old is not None:
            old.finish()

    def close(self) -> None:
        """Finish the VW workspace; the policy cannot choose or learn afterwards."""
        with self._lock:
            workspace, self._workspace = self._workspace, None
        if workspace is not None:
            workspace.finish()

    def __enter__(self) -> VowpalWabbitPolicy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A finalizer must never raise, even half-initialized or at interpreter shutdown.
        with contextlib.suppress(Exception):
            if getattr(self, "_workspace", None) is not None:
                self.close()


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``vw`` policy."""
    register("vw", VowpalWabbitPolicy)
