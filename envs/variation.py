"""Factors of variation: the visual (and, where the task allows, geometric) changes an env can draw.

Each env declares its factors in one table, ``FACTORS`` on the class: ``name -> Factor(kind,
train, test)``. The env option ``variation`` picks what is drawn at every ``reset``:

- ``"none"`` (default): nothing; the env renders exactly as it always has;
- ``"train"`` / ``"test"``: every factor drawn from its train (test) range;
- a dict ``{factor: range}``: those factors drawn from the given ranges, the others left at the
  env's default; an optional ``"split"`` key (``"none"``, ``"train"`` or ``"test"``) names the
  split the other factors come from, e.g. ``{"split": "train", "floor_rgb": [[0, 0, 0], [.2, .2, .2]]}``
  holds out one factor.

Kinds and their ranges (a range may also be one value, meaning that value always):

| kind | range | value drawn |
|---|---|---|
| ``"rgb"`` | ``[[r, g, b], [r, g, b]]`` low and high, in [0, 1] | ``[r, g, b]`` uniform per channel |
| ``"uniform"`` | ``[low, high]`` | a float, uniform |
| ``"choice"`` | a list of options | one option, uniform |

Factors come from their own generator, seeded by ``reset(seed=...)`` apart from the generator of
the start and goal, so a seed fixes the factors and changing a factor's range never changes the
start and goal drawn (except where a factor changes which states exist, e.g. a maze layout).
The success rule never depends on a factor. ``info["factors"]`` holds the values drawn.
"""
from __future__ import annotations

import difflib
from typing import NamedTuple

import numpy as np

__all__ = ["Factor", "KINDS", "SPLITS", "resolve_variation", "sample_factors", "factor_rng", "describe",
           "factor_groups", "held_out_shifts"]

KINDS = ("rgb", "uniform", "choice")
SPLITS = ("none", "train", "test")
_STREAM = 0x5EED_FAC7  # mixed with the episode seed: the factors' own generator


class Factor(NamedTuple):
    """One factor of variation: its kind and its train and test ranges (see the module docstring)."""

    kind: str
    train: object
    test: object


def _check_range(name: str, kind: str, value) -> object:
    """``value`` as a plain range of ``kind`` (one value widened to a range).

    Raises:
        ValueError: a range that does not fit the kind.
    """
    try:
        if kind == "choice":
            options = [value] if isinstance(value, (str, int, float)) else list(value)
            if not options:
                raise ValueError("no options")
            return options
        arr = np.asarray(value, dtype=np.float64)
        single = (3,) if kind == "rgb" else ()
        if arr.shape == single:
            arr = np.stack([arr, arr])
        if arr.shape != (2, *single) or not np.all(np.isfinite(arr)) or np.any(arr[0] > arr[1]):
            raise ValueError(f"shape {arr.shape}")
        if kind == "rgb" and (arr.min() < 0 or arr.max() > 1):
            raise ValueError("colour channels must lie in [0, 1]")
        return arr.tolist()
    except (TypeError, ValueError) as e:
        form = {"rgb": "[[r, g, b], [r, g, b]] (low, high in [0, 1]) or one [r, g, b]",
                "uniform": "[low, high] or one number", "choice": "a list of options or one option"}[kind]
        raise ValueError(f"factor {name!r} ({kind}): expected {form}, got {value!r} ({e})") from e


def resolve_variation(variation, factors: dict[str, Factor]) -> tuple[str, dict[str, object]]:
    """The split name and the ranges to draw from, for an env's ``variation`` option.

    Args:
        variation: ``"none"``, ``"train"``, ``"test"``, None (= ``"none"``) or a dict
            ``{factor: range}`` with an optional ``"split"`` key.
        factors: the env's ``FACTORS`` table.

    Returns:
        ``(split, {factor: range})``: split is ``"none"``, ``"train"``, ``"test"`` or ``"custom"``;
        the ranges are plain lists, only for the factors that vary.

    Raises:
        ValueError: an unknown split or factor (with the closest name), or a malformed range.
    """
    variation = "none" if variation is None else variation
    overrides = {}
    if isinstance(variation, dict):
        overrides = dict(variation)
        base = overrides.pop("split", "none")
    else:
        base = variation
    if base not in SPLITS:
        raise ValueError(f"variation must be one of {SPLITS} or a dict of factor ranges, got {base!r}")
    ranges = {} if base == "none" else {n: getattr(f, base) for n, f in factors.items()}
    for name, value in overrides.items():
        if name not in factors:
            close = difflib.get_close_matches(str(name), list(factors), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown factor {name!r}.{hint} This env's factors: {', '.join(factors) or 'none'}")
        ranges[name] = value
    ranges = {n: _check_range(n, factors[n].kind, r) for n, r in ranges.items()}
    return ("custom" if overrides else base), ranges


def factor_rng(seed: int | None) -> np.random.Generator:
    """The factors' generator for an episode seed (independent of the start/goal generator)."""
    return np.random.default_rng(None if seed is None else [int(seed), _STREAM])


def sample_factors(ranges: dict[str, object], factors: dict[str, Factor], rng: np.random.Generator) -> dict:
    """One value per factor in ``ranges``, drawn in the table's order: plain floats, lists or options."""
    out = {}
    for name, factor in factors.items():
        if name not in ranges:
            continue
        r = ranges[name]
        if factor.kind == "choice":
            out[name] = r[int(rng.integers(len(r)))]
        elif factor.kind == "rgb":
            out[name] = [float(v) for v in rng.uniform(r[0], r[1])]
        else:
            out[name] = float(rng.uniform(r[0], r[1]))
    return out


def describe(split: str, ranges: dict[str, object], factors: dict[str, Factor]) -> dict:
    """Plain description of a variation (for ``dataset.json``): split and ``{factor: {kind, range}}``."""
    return {"split": split, "factors": {n: {"kind": factors[n].kind, "range": r} for n, r in ranges.items()}}


def factor_groups(factors: dict[str, Factor]) -> dict[str, list[str]]:
    """Factors grouped by the first word of their names, in table order: ``floor_rgb`` and
    ``floor_texrepeat`` make ``floor``, the ``distractor_*`` factors ``distractor``, ``light`` itself."""
    groups: dict[str, list[str]] = {}
    for name in factors:
        groups.setdefault(name.split("_", 1)[0], []).append(name)
    return groups


def held_out_shifts(factors: dict[str, Factor]) -> dict[str, dict | str]:
    """One distribution shift per factor group, and all of them at once.

    Each ``<group>`` shift draws that group's factors from their test ranges and every other factor
    from its train range (``{"split": "train", factor: test range, ...}``); groups whose test ranges
    equal their train ranges are left out. ``"test"`` draws every factor from its test range.

    Returns:
        ``{shift name: variation}``, usable as an env's ``variation`` option; ``{}`` without factors.
    """
    if not factors:
        return {}
    shifts: dict[str, dict | str] = {}
    for group, names in factor_groups(factors).items():
        if any(factors[n].test != factors[n].train for n in names):
            shifts[group] = {"split": "train", **{n: factors[n].test for n in names}}
    shifts["test"] = "test"
    return shifts
