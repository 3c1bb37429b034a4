"""The typed suite config: :class:`SuiteSettings`, built once from the composed ``configs/bench.yaml``.

``SuiteSettings.from_config(cfg)`` resolves every entry of the chosen suite (``configs/bench/<suite>``)
against its hydra group config (``configs/env``, ``encoder``, ``planner``, ``model``, ``train``) with
the suite's changes merged on top, and checks the ``env=`` / ``encoder=`` / ``planner=`` selection.
Every later stage reads these dataclasses; none reads the raw config again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mpc._config import config_names, group_config, resolve_device, split_encoder_config, to_plain

__all__ = ["BASELINES", "SHIFT_MODES", "merge", "DataSettings", "ProbeSettings",
           "EvalSettings", "EnvSettings", "EncoderSettings", "PlannerSettings", "SuiteSettings"]

BASELINES = ("random", "oracle")  # baseline policies a suite may list, in report order
GOAL_PROPRIO = ("env", "image")  # the values of eval.goal_proprio


def merge(base: dict, *changes: dict | None) -> dict:
    """``base`` with each of ``changes`` merged over it in turn (nested dicts merge, the rest replaces)."""
    from omegaconf import OmegaConf

    parts = [OmegaConf.create(base)] + [OmegaConf.create(c) for c in changes if c]
    return to_plain(OmegaConf.merge(*parts))


_CASTS = {"int": int, "float": float, "str": str, "bool": bool}


def _build(cls, values: dict | None, where: str):
    """``cls(**values)`` with scalar fields cast to their declared types.

    Raises:
        ValueError: a key ``cls`` does not know, or a required one missing (the message lists them).
    """
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    typed = {k: _CASTS[known[k].type](v) if known[k].type in _CASTS and v is not None else v
             for k, v in values.items()}
    try:
        return cls(**typed)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def _group_or(group: str, name: str, default: dict) -> dict:
    """``configs/<group>/<name>.yaml`` composed, or ``default`` when the suite names no such file."""
    return group_config(group, name) if name in config_names(group) else dict(default)


@dataclass(frozen=True)
class DataSettings:
    """Goal-free exploration data of one env (:func:`mpc.data.collect`)."""

    episodes: int = 100      # episodes (seeds ``seed ..``)
    steps: int = 50          # steps per episode
    policy: str = "uniform"  # exploration policy
    seed: int = 0            # seed of the first episode
    policy_options: dict = field(default_factory=dict)  # options of the exploration policy


@dataclass(frozen=True)
class ProbeSettings:
    """Latent-vs-true distance probe along straight lines (agent positions in the env's units)."""

    lines: list              # ``[[[x0, y0], [x1, y1]], ...]``
    points: int = 25         # rendered states per line


@dataclass(frozen=True)
class EvalSettings:
    """Closed-loop evaluation of every cell of one env (suite ``eval`` with the env's ``eval`` on top)."""

    episodes: int            # held-out goals per cell
    steps: int               # env steps per episode
    batch_envs: int          # envs planned together
    seed: int                # first evaluation seed
    replan_every: int = 1    # model steps executed per plan
    action_bound: float = 1.0  # fraction of the env's action box the planner searches, about its centre
    horizon: int | None = None  # planned model steps for every planner of this entry (None: each planner entry's)
    planner_options: dict | None = None  # changes to every planner entry's options in this entry's cells
                             # (e.g. {samples: 128, iterations: 8, elites: 16}: a larger search budget); None: none
    objective: str = "last"  # planning objective
    alpha: float = 0.0       # goal-proprio weight
    goal_proprio: str = "env"  # with alpha > 0, where the goal's proprio comes from: "env" (the env's
                             # info["goal_proprio"]: rows labelled goal-proprio) or "image" (read from the
                             # goal image by a proprio estimator trained on the entry's data)
    estimator: dict = field(default_factory=dict)  # train_proprio_estimator options (steps, width, ...)
    proprio_weights: list | None = None  # per proprio value, its weight in the goal-proprio term (None: equal)
    distance: dict | None = None  # plan with a learned temporal distance (mpc.temporal_distance) instead of
                             # the token MSE: its train_temporal_distance options (steps, tau, ...), trained
                             # per (entry, encoder) on the entry's data; None: the token MSE
    videos: int = 1          # GIFs per planner cell
    baseline_videos: int = 0  # GIFs per baseline

    def __post_init__(self):
        if self.goal_proprio not in GOAL_PROPRIO:
            raise ValueError(f"eval.goal_proprio must be one of {GOAL_PROPRIO}, got {self.goal_proprio!r}")
        if self.horizon is not None and (isinstance(self.horizon, bool) or not isinstance(self.horizon, int)
                                         or self.horizon < 1):
            raise ValueError(f"eval.horizon must be a whole number of model steps >= 1 (or null: each planner "
                             f"entry's), got {self.horizon!r}")
        if self.planner_options is not None and not isinstance(self.planner_options, dict):
            raise ValueError(f"eval.planner_options must be a mapping of planner options (e.g. {{samples: 128, "
                             f"iterations: 8}}) or null, got {self.planner_options!r}")
        from mpc.controller import check_action_bound

        check_action_bound(self.action_bound, "eval.action_bound")

    @property
    def estimates_goal_proprio(self) -> bool:
        """Whether planner cells read the goal's proprio from the goal image (alpha > 0, ``image``)."""
        return self.alpha > 0 and self.goal_proprio == "image"


@dataclass(frozen=True)
class EnvSettings:
    """One env of the suite."""

    name: str                # entry name in the suite (rows and folders use it)
    options: dict            # ``make_env`` options: configs/env/<name>.yaml with the suite's ``options`` on top
    data: DataSettings       # exploration data
    model: dict              # changes to the world-model preset for this env
    probe: ProbeSettings | None  # latent probe (None: no probe)
    eval: EvalSettings       # evaluation
    env: str = ""            # registered env name (an entry's ``env:``; empty: ``name``), e.g. two
                             # entries pointmaze and pointmaze_medium of the env pointmaze
    shifts: dict = field(default_factory=dict)  # evaluation-only distribution shifts: name -> the
                             # env's ``variation`` option (data and training keep ``options``)
    train: dict = field(default_factory=dict)  # changes to the suite's world-model schedule for this
                             # entry (e.g. more steps: a training-budget study)
    data_from: str = ""      # entry whose dataset this one reuses (same env, options and data
                             # settings; empty: its own, ``data/<name>``)

    def __post_init__(self):
        if not self.env:
            object.__setattr__(self, "env", self.name)

    def options_for(self, shift: str = "") -> dict:
        """``make_env`` options of the evaluation condition ``shift`` ("" : the training condition)."""
        if not shift:
            return dict(self.options)
        return {**self.options, "variation": self.shifts[shift]}

    @property
    def collect_options(self) -> tuple[dict, int, int]:
        """``(env options, image_size, action_repeat)``: what :func:`mpc.data.collect` takes apart."""
        opts = dict(self.options)
        return opts, int(opts.pop("image_size", 64)), int(opts.pop("action_repeat", opts.pop("frameskip", 1)))

    @property
    def data_name(self) -> str:
        """The folder name of this entry's dataset under ``data/`` (``data_from`` or its own name)."""
        return self.data_from or self.name


@dataclass(frozen=True)
class EncoderSettings:
    """One encoder entry of the suite."""

    entry: str               # entry name in the suite (rows and folders use it)
    name: str                # registered encoder backend
    options: dict            # ``make_encoder`` options (configs/encoder/<name>.yaml with the entry's on top)
    train: dict              # ``train_encoder`` settings (trainable backends)
    model: dict              # changes to the world-model preset for this encoder
    model_train: dict = field(default_factory=dict)  # changes to the world-model schedule for this encoder
    envs: tuple[str, ...] | None = None  # the env entries it runs on (None: every one)

    KEYS = ("name", "options", "train", "model", "model_train", "envs")  # the keys an entry may hold

    @classmethod
    def from_entry(cls, entry_name: str, entry: dict | None) -> "EncoderSettings":
        """An entry's ``model:`` and ``model_train:`` change the world-model preset and schedule of its
        units (over the suite's and the env entry's); ``envs:`` lists the env entries it runs on.

        Raises:
            ValueError: a key no encoder entry has.
        """
        entry = dict(entry or {})
        unknown = sorted(set(entry) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"encoders.{entry_name}: unknown key(s) {', '.join(unknown)}; known keys: "
                             f"{', '.join(cls.KEYS)}")
        name = str(entry.get("name", entry_name))
        base = _group_or("encoder", name, {"name": name})
        _, base = split_encoder_config(base, drop_load_keys=True)
        options = {k: v for k, v in merge(base, entry.get("options")).items() if v is not None}
        train = {"steps": 1000, "batch_size": 64, "lr": 1e-3, "frameskip": 1, **(entry.get("train") or {})}
        envs = entry.get("envs")
        if isinstance(envs, str):
            envs = [envs]
        return cls(entry_name, name, options, train, dict(entry.get("model") or {}),
                   dict(entry.get("model_train") or {}), tuple(str(e) for e in envs) if envs is not None else None)

    def runs_on(self, env: str) -> bool:
        """Whether this encoder has a unit on env entry ``env``."""
        return self.envs is None or env in self.envs


@dataclass(frozen=True)
class PlannerSettings:
    """One planner entry of the suite."""

    entry: str               # entry name in the suite
    name: str                # registered planner name
    horizon: int             # H, planned model steps
    options: dict            # ``make_planner`` options (no seed: evaluation seeds each batch)
    risk: float = 0.0        # beta of the risk-aware objective (mpc.objectives; needs an ensemble model)
    risk_mode: str = "disagreement"  # how the ensemble's uncertainty enters (mpc.objectives.RISK_MODES)

    @classmethod
    def from_entry(cls, entry_name: str, entry: dict | None) -> "PlannerSettings":
        """An entry's ``risk:`` and ``risk_mode:`` set the objective's beta (0: off) and mode; the other
        keys are planner options."""
        from mpc.objectives import RISK_MODES

        entry = dict(entry or {})
        name = str(entry.pop("name", entry_name))
        risk = float(entry.pop("risk", 0.0) or 0.0)
        risk_mode = str(entry.pop("risk_mode", "disagreement"))
        if risk < 0:
            raise ValueError(f"planners.{entry_name}.risk must be >= 0, got {risk}")
        if risk_mode not in RISK_MODES:
            raise ValueError(f"planners.{entry_name}.risk_mode must be one of {RISK_MODES}, got {risk_mode!r}")
        base = group_config("planner", entry.pop("config", name))
        base.pop("name", None)
        options = merge(base, entry)
        horizon = int(options.pop("horizon", 5))
        options.pop("seed", None)
        return cls(entry_name, name, horizon, options, risk, risk_mode)


SHIFT_MODES = ("none", "held_out")  # the values of a suite's or env entry's ``shifts:``


def _shifts(name: str, env: str, bench: dict, entry: dict) -> dict:
    """The evaluation shifts of env entry ``name``: ``shifts: held_out`` gives one per factor group of
    the env (:func:`envs.variation.held_out_shifts`) and ``test``; ``custom_shifts: {name: variation}``
    (suite-level, then the entry's) adds or replaces named ones. Each is checked against the env's
    factors here, so a typo fails before anything is trained.

    Raises:
        ValueError: an unknown ``shifts`` mode, a custom shift named like the training condition, or a
            variation the env rejects (unknown factor, malformed range).
    """
    import envs
    from envs.variation import held_out_shifts, resolve_variation

    mode = str(entry.get("shifts", bench.get("shifts", "none")) or "none")
    if mode not in SHIFT_MODES:
        raise ValueError(f"envs.{name}.shifts must be one of {SHIFT_MODES}, got {mode!r}")
    custom = {**(bench.get("custom_shifts") or {}), **(entry.get("custom_shifts") or {})}
    if mode == "none" and not custom:
        return {}
    factors = envs.env_factors(env)
    shifts = held_out_shifts(factors) if mode == "held_out" else {}
    shifts.update(custom)
    for shift, variation in shifts.items():
        if not str(shift) or "__" in str(shift) or "/" in str(shift):
            raise ValueError(f"envs.{name}: shift name {shift!r} must be non-empty, without '__' or '/'")
        try:
            resolve_variation(variation, factors)
        except ValueError as e:
            raise ValueError(f"envs.{name}: shift {shift!r}: {e}") from None
    return shifts


def _env_settings(name: str, entry: dict, bench: dict) -> EnvSettings:
    env = str(entry.get("env") or name)
    options = merge(_group_or("env", env, {"name": env}), entry.get("options"))
    options.pop("name", None)
    probe = entry.get("probe")
    data = {**(entry.get("data") or {})}
    data["policy_options"] = data.get("policy_options") or {}
    return EnvSettings(name=name, env=env, options=options, data=_build(DataSettings, data, f"envs.{name}.data"),
                       model=dict(entry.get("model") or {}),
                       probe=_build(ProbeSettings, probe, f"envs.{name}.probe") if probe else None,
                       eval=_build(EvalSettings, merge(bench["eval"], entry.get("eval")), f"envs.{name}.eval"),
                       shifts=_shifts(name, env, bench, entry), train=dict(entry.get("train") or {}),
                       data_from=_data_from(name, entry, bench))


def _data_from(name: str, entry: dict, bench: dict) -> str:
    """The entry whose dataset ``name`` reuses (``data_from:``), checked: it must exist, be of the same
    env with the same options and data settings (else its data would not be this entry's).

    Raises:
        ValueError: an unknown entry, or one whose env, options or data differ.
    """
    src = str(entry.get("data_from") or "")
    if not src or src == name:
        return ""
    entries = bench["envs"]
    if src not in entries:
        raise ValueError(f"envs.{name}.data_from={src!r} is no env entry of this suite; it has {', '.join(entries)}")
    other = entries[src] or {}
    if (other.get("data_from") or src) != src:
        raise ValueError(f"envs.{name}.data_from={src!r} reuses data itself; name the entry that collects them")
    for key in ("env", "options", "data"):
        mine, theirs = entry.get(key) or (name if key == "env" else {}), other.get(key) or (src if key == "env" else {})
        if to_plain(mine) != to_plain(theirs):
            raise ValueError(f"envs.{name}.data_from={src!r}: the two entries' {key} differ ({mine} vs {theirs}); "
                             "data are reused only between entries that would collect the same data")
    return src


def _reference(bench: dict) -> str | None:
    """The suite's ``reference_planner`` (an entry of ``planners``), or None.

    Raises:
        ValueError: a name that is no planner entry of the suite.
    """
    ref = bench.get("reference_planner")
    if ref is not None and ref not in bench["planners"]:
        raise ValueError(f"reference_planner={ref!r} is no planner entry of this suite; it has "
                         f"{', '.join(bench['planners'])}")
    return ref


def _outside_env(name: str) -> bool:
    """Whether ``env=name`` may join a suite that does not list it: a gymnasium id or a wmpc env."""
    import envs

    return ":" in name or name in envs.list_envs()


def _env_entry(entries: dict, name: str) -> dict:
    """The suite's entry of env ``name``; an env the suite does not list (a user's gymnasium id)
    borrows the first env's data and evaluation settings and image size, and has no probe."""
    if name in entries:
        return entries[name] or {}
    first = entries[next(iter(entries))] or {}
    size = (first.get("options") or {}).get("image_size")
    return {"options": {"image_size": size} if size else {}, "data": first.get("data"),
            "eval": first.get("eval")}


def _selection(value, available: list[str], what: str, extra=None) -> list[str]:
    """``None`` -> all of ``available``; a name, comma list or list -> those (checked).

    ``extra(name)`` says whether a name outside ``available`` is allowed too.
    """
    if value is None:
        return list(available)
    names = [value] if isinstance(value, str) else list(value)
    names = [n.strip() for x in names for n in str(x).strip("[]").split(",") if n.strip()]  # also [a,b]
    bad = [n for n in names if n not in available and not (extra and extra(n))]
    if bad:
        raise ValueError(f"{what}={','.join(bad)} is not part of this suite; it has {what}s "
                         f"{', '.join(available)} (pick another suite= or add it to configs/bench/)")
    return names


@dataclass(frozen=True)
class SuiteSettings:
    """A whole suite run: the suite's entries (the selected ones resolved) and the run options."""

    name: str                        # suite name
    out: Path                        # run folder
    env_order: list[str]             # every env of the suite, in its order (report rows follow it)
    encoder_order: list[str]         # every encoder entry, in order
    planner_order: list[str]         # every planner entry, in order
    envs: dict[str, EnvSettings]     # the selected envs
    encoders: dict[str, EncoderSettings]  # the selected encoder entries
    planners: dict[str, PlannerSettings]  # the selected planner entries
    model: dict                      # world-model preset with the suite's ``model_options``
    train: dict                      # world-model training schedule with the suite's ``train``
    baselines: list[str]             # baseline policies per env
    gifs: int                        # episode GIFs shown in report.md
    seed: int                        # world-model initialisation and data order
    device: str                      # resolved device name
    workers: int                     # processes collecting data
    jobs: int                        # (env, encoder) units at once
    threads: int | None              # torch threads per process
    progress: bool                   # tqdm bars
    fail_fast: bool                  # stop at the first failing cell
    select: dict | None = None       # the selection as given (for the report)
    reference_planner: str | None = None  # planner entry the report's budget section compares with
    budget_target: float | None = None  # success rate the training-budget section looks for

    @classmethod
    def from_config(cls, cfg) -> "SuiteSettings":
        """Resolve the composed ``configs/bench.yaml`` (node or dict).

        Raises:
            ValueError: an ``env`` / ``encoder`` / ``planner`` selection outside the suite, or a
                config the suite names that does not exist.
        """
        c: dict[str, Any] = to_plain(cfg)
        bench = c["bench"]
        select = c.get("select") or {}
        env_names = _selection(select.get("env"), list(bench["envs"]), "env", extra=_outside_env)
        enc_names = _selection(select.get("encoder"), list(bench["encoders"]), "encoder")
        encoders = {e: EncoderSettings.from_entry(e, bench["encoders"][e]) for e in enc_names}
        for e, es in encoders.items():
            unknown = [n for n in es.envs or () if n not in bench["envs"]]
            if unknown:
                raise ValueError(f"encoders.{e}.envs names {', '.join(unknown)}, no env entry of this suite; "
                                 f"it has {', '.join(bench['envs'])}")
        plan_names = _selection(select.get("planner"), list(bench["planners"]), "planner")
        threads = c.get("threads") or bench.get("threads")
        return cls(
            name=bench["name"], out=Path(c["out"]),
            env_order=list(bench["envs"]), encoder_order=list(bench["encoders"]),
            planner_order=list(bench["planners"]),
            envs={e: _env_settings(e, _env_entry(bench["envs"], e), bench) for e in env_names},
            encoders=encoders,
            planners={p: PlannerSettings.from_entry(p, bench["planners"][p]) for p in plan_names},
            model=merge(group_config("model", bench["model"]), bench.get("model_options")),
            train=merge(group_config("train", bench.get("train_preset", "default")), bench.get("train")),
            baselines=list(bench.get("baselines", BASELINES)), gifs=int(bench.get("gifs", 6)),
            seed=int(c["seed"]), device=str(resolve_device(c.get("device"))),
            workers=int(c.get("workers", 1)), jobs=int(c.get("jobs") or bench.get("jobs") or 1),
            threads=int(threads) if threads else None, progress=bool(c.get("progress", False)),
            fail_fast=bool(c.get("fail_fast", False)), select=c.get("select"),
            reference_planner=_reference(bench),
            budget_target=float(bench["budget_target"]) if bench.get("budget_target") is not None else None)

    def train_for(self, env: str, encoder: str | None = None) -> dict:
        """The world-model training schedule of env entry ``env``: the suite's with the entry's ``train``,
        then (given ``encoder``) the encoder entry's ``model_train``."""
        extra = self.encoders[encoder].model_train if encoder is not None else None
        return merge(self.train, self.envs[env].train, extra)

    def units(self) -> list[tuple[str, str]]:
        """Every ``(env, encoder)`` pair with a unit, encoders first: an encoder entry's ``envs:``
        restricts it to those env entries."""
        return [(env, enc) for enc, es in self.encoders.items() for env in self.envs if es.runs_on(env)]

    def cell_settings(self, env: str, encoder: str | None, planner: str | None, shift: str = "") -> dict:
        """Everything that decides a cell's result, as plain JSON: the env entry's options for ``shift``,
        its data and evaluation settings, and for a planner cell the encoder entry, the world-model
        preset and schedule and the planner entry. A finished cell is reused only while these hold,
        so a changed config re-runs the cells it changes."""
        es = self.envs[env]
        ev = {k: v for k, v in asdict(es.eval).items() if k not in ("videos", "baseline_videos")}  # GIFs only
        if planner is None or not es.eval.estimates_goal_proprio:  # added later; at no effect here, so
            # rows written before them stay valid
            ev.pop("goal_proprio")
            ev.pop("estimator")
        if ev.get("proprio_weights") is None:
            ev.pop("proprio_weights", None)
        if ev.get("distance") is None or planner is None:  # the token MSE, or a baseline row
            ev.pop("distance", None)
        if ev.get("action_bound") == 1.0 or planner is None:  # the whole box (rows from before it), or a baseline
            ev.pop("action_bound", None)
        if ev.get("horizon") is None or planner is None:  # the planner entry's horizon, or a baseline
            ev.pop("horizon", None)
        if not ev.get("planner_options") or planner is None:  # the planner entries' options, or a baseline
            ev.pop("planner_options", None)
        out = {"env": es.env, "options": es.options_for(shift), "data": asdict(es.data), "eval": ev}
        if encoder is not None:
            enc = self.encoders[encoder]
            out.update(encoder={"name": enc.name, "options": enc.options, "train": enc.train},
                       model=self.model_config(env, encoder), train=self.train_for(env, encoder))
        if planner is not None:
            out["planner"] = asdict(self.planners[planner])
        return to_plain(out)

    def planner_options(self, env: str, planner: str) -> dict:
        """The options of planner entry ``planner`` in env entry ``env``'s cells: the entry's options with
        the env entry's ``eval.planner_options`` merged over them."""
        return merge(self.planners[planner].options, self.envs[env].eval.planner_options)

    def model_config(self, env: str, encoder: str) -> dict:
        """The world-model preset of ``(env, encoder)``: suite, then env, then encoder changes."""
        return merge(self.model, self.envs[env].model, self.encoders[encoder].model)
