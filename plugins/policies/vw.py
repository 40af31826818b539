"""The ``vw`` policy: a Vowpal Wabbit ``--cb_explore_adf`` contextual bandit.

Decisions are VW multi-line examples (``plugins.policies.vw_format``): the recipient's
context in namespace ``U``, each variant's key and features in namespace ``A``; the default
``--interactions UA`` crosses every context feature with every variant feature.

The defaults learn at the low click rates of email (2-10%) without tuning: epsilon-greedy
exploration (epsilon 0.05) over a direct-method cost regression (``--cb_type dm``) at a
learning rate of 0.1, and a floor under every variant's probability, so offline
evaluation always has support. VW's own defaults (importance-weighted ``mtr`` at rate
0.5) chase the noise of rare clicks; ``bench/learning.py`` measures both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.errors import ConfigError
from engine.hookspecs import PolicyFactory
from engine.sampling import decide
from plugins.policies.vw_format import escape, vw_example

if TYPE_CHECKING:
    import vowpalwabbit

__all__ = ["EXPLORATIONS", "VowpalWabbitPolicy", "floored", "vw_example"]

FORMAT = "tailormail-vw/1"
EXPLORATIONS = ("squarecb", "epsilon", "softmax", "bag", "cover")
CB_TYPES = ("mtr", "dm", "ips", "dr")


def floored(pmf: Mapping[str, float], floors: Mapping[str, float]) -> dict[str, float]:
    """``pmf`` mixed with ``floors`` so each key gets at least its floor; still sums to 1.

    ``p'(k) = floor(k) + (1 - sum of floors) * p(k)``: the mixture is exact, so the logged
    probability is the one the choice is sampled with.
    """
    total = sum(floors.values())
    if total <= 0:
        return dict(pmf)
    if total >= 1:
        return {key: floors.get(key, 0.0) / total for key in pmf}
    return {key: floors.get(key, 0.0) + (1.0 - total) * p for key, p in pmf.items()}


def _number(name: str, value: object, low: float, high: float | None = None) -> float:
    """``value`` as a float in ``[low, high]``, or a ConfigError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"vw policy: {name} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"vw policy: {name} must be {bounds}, got {value!r}")
    return float(value)


def vw_arguments(
    *,
    exploration: str,
    epsilon: float,
    gamma_scale: float,
    lambda_: float,
    ensemble_size: int,
    interactions: str | Sequence[str],
    cb_type: str | None,
    learning_rate: float | None,
    power_t: float | None,
    seed: int | None,
) -> list[str]:
    """The VW command line for the policy's parameters (checked, errors name the key)."""
    if exploration not in EXPLORATIONS:
        raise ConfigError(
            f"vw policy: exploration must be one of {EXPLORATIONS}, got {exploration!r}"
        )
    args = ["--cb_explore_adf", "--quiet"]
    if cb_type is None:  # the direct method learns rare clicks best; squarecb, cover: mtr
        cb_type = "mtr" if exploration in ("squarecb", "cover") else "dm"
    if exploration == "squarecb":
        if cb_type != "mtr":
            raise ConfigError(f"vw policy: squarecb needs cb_type 'mtr', got {cb_type!r}")
        args += ["--squarecb", "--gamma_scale", repr(_number("gamma_scale", gamma_scale, 0))]
    elif exploration == "softmax":
        args += ["--softmax", "--lambda", repr(_number("lambda_", lambda_, 0))]
    else:
        if exploration in ("bag", "cover"):
            size = int(_number("ensemble_size", ensemble_size, 1))
            args += [f"--{exploration}", str(size)]
        args += ["--epsilon", repr(float(epsilon))]
    if cb_type not in CB_TYPES:
        raise ConfigError(f"vw policy: cb_type must be one of {CB_TYPES}, got {cb_type!r}")
    args += ["--cb_type", cb_type]
    for pair in [interactions] if isinstance(interactions, str) else interactions:
        if not isinstance(pair, str) or len(pair) < 2 or escape(pair) != pair:
            raise ConfigError(f"vw policy: bad interactions entry {pair!r}")
        args += ["--interactions", pair]
    if learning_rate is not None:
        args += ["--learning_rate", repr(_number("learning_rate", learning_rate, 0))]
    if power_t is not None:
        args += ["--power_t", repr(_number("power_t", power_t, 0, 1))]
    if seed is not None:
        args += ["--random_seed", str(int(seed))]
    return args


class VowpalWabbitPolicy:
    """A contextual bandit over the campaign's variants, backed by a VW workspace.

    Parameters (every one optional; the defaults learn):

    - ``exploration``: ``epsilon`` (default), ``squarecb``, ``softmax``, ``bag`` or ``cover``;
    - ``epsilon`` (epsilon, bag, cover; 0.05), ``gamma_scale`` (squarecb: larger is greedier),
      ``lambda_`` (softmax), ``ensemble_size`` (bag, cover);
    - ``cb_type``: VW's cost estimator, ``dm`` (default; ``mtr`` with squarecb, which needs
      it, and with cover, which has no ``dm``), ``mtr``, ``ips`` or ``dr``;
    - ``interactions``: namespace pairs, ``"UA"`` (context x variant) by default;
    - ``learning_rate`` and ``power_t``: VW's ``--learning_rate`` and ``--power_t``;
    - ``min_probability``: the least probability any variant gets (default 0.01);
    - ``new_variant_examples``: a variant chosen in fewer learned decisions than this (a
      variant added to a running campaign, say) gets at least half its uniform share, so it
      is explored rather than ignored (default 100; 0 turns it off);
    - ``seed`` (VW's own random seed) and ``extra_args`` (passed to VW verbatim).
    """

    name = "vw"
    # What ``tailormail train`` tries, each entry applied alone to the champion's settings
    # (engine.learning.challengers): exploration, learning rate, interactions, cb_type.
    search_space: tuple[dict[str, Any], ...] = (
        {"exploration": "squarecb"},
        {"exploration": "bag"},
        {"epsilon": 0.02},
        {"epsilon": 0.2},
        {"learning_rate": 0.03},
        {"learning_rate": 0.5},
        {"interactions": ["UA", "UUA"]},
        {"interactions": []},
        {"cb_type": "dr"},
        {"cb_type": "mtr"},
    )

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """Check a ``[policy]`` table at start-up without a VW workspace when it is empty
        (the defaults, which VW accepts); other settings are also put to VW itself."""
        if params:
            cls(**params).close()

    def __init__(
        self,
        *,
        exploration: str = "epsilon",
        epsilon: float | None = None,
        gamma_scale: float = 10.0,
        lambda_: float = 10.0,
        ensemble_size: int = 4,
        cb_type: str | None = None,
        interactions: str | Sequence[str] = ("UA",),
        learning_rate: float | None = 0.1,
        power_t: float | None = None,
        min_probability: float = 0.01,
        new_variant_examples: int = 100,
        extra_args: str = "",
        seed: int | None = None,
    ) -> None:
        if exploration in ("squarecb", "softmax") and epsilon is not None:
            raise ConfigError(
                f"vw policy: epsilon has no effect with exploration {exploration!r} "
                "(squarecb explores by gamma_scale, softmax by lambda_)"
            )
        epsilon = _number("epsilon", 0.05 if epsilon is None else epsilon, 0, 1)
        self.min_probability = _number("min_probability", min_probability, 0, 1)
        self.new_variant_examples = int(_number("new_variant_examples", new_variant_examples, 0))
        args = vw_arguments(
            exploration=exploration,
            epsilon=epsilon,
            gamma_scale=gamma_scale,
            lambda_=lambda_,
            ensemble_size=ensemble_size,
            interactions=interactions,
            cb_type=cb_type,
            learning_rate=learning_rate,
            power_t=power_t,
            seed=seed,
        )
        self.args = shlex.join(args + shlex.split(extra_args))
        self.model_version: str | None = None
        self.examples_learned = 0
        self.chosen_counts: dict[str, int] = {}  # learned decisions per chosen variant
        self._lock = threading.Lock()
        self._workspace: vowpalwabbit.Workspace | None = self._open(self.args)

    @staticmethod
    def _open(args: str, model_path: str | None = None) -> vowpalwabbit.Workspace:
        """A fresh VW workspace for ``args``, initialized from ``model_path`` if given."""
        # lazy: vowpalwabbit loads its native library; a plugin module loads light
        import vowpalwabbit

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
        return decide(floored(pmf, self.floors(pmf)), seed, self.name, self.model_version)

    def floors(self, keys: Iterable[str]) -> dict[str, float]:
        """Each variant's least probability: ``min_probability``, or half the uniform share
        for a variant still new to the model (chosen in fewer than ``new_variant_examples``
        learned decisions) once the model has learned anything at all."""
        keys = list(keys)
        warm = self.examples_learned > 0 and self.new_variant_examples > 0
        new_floor = 0.5 / len(keys)
        return {
            key: max(self.min_probability, new_floor)
            if warm and self.chosen_counts.get(key, 0) < self.new_variant_examples
            else self.min_probability
            for key in keys
        }

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
                self.chosen_counts[item.chosen] = self.chosen_counts.get(item.chosen, 0) + 1

    def save(self) -> bytes:
        """A JSON header line (format, VW arguments, counters) followed by the VW model."""
        header = {
            "format": FORMAT,
            "args": self.args,
            "examples_learned": self.examples_learned,
            "chosen_counts": self.chosen_counts,
        }
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
            counts = header.get("chosen_counts") or {}
            self.chosen_counts = {str(key): int(value) for key, value in counts.items()}
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
