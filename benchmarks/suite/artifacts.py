"""What a suite trains once and reuses: datasets, encoders and world models, and where they lie.

Run folder layout (names built here only)::

    data/<env>/                         datasets (mpc.data layout) + suite_collect.json
    encoders/<env>__<encoder>-<digest>/ encoder checkpoint + train_time.json (trainable backends)
    models/<env>__<encoder>-<digest>/   world-model training run + train_time.json
    estimators/<env>-<digest>/          proprio estimator (eval.goal_proprio: image) + train_time.json
    distances/<env>__<encoder>-<digest>/  temporal distance (eval.distance) + train_time.json
    cells/<env>__<encoder>__<planner>.json   one result row per cell (``@<shift>`` before .json:
                                        evaluated under a distribution shift)
    probes/<env>__<encoder>.json        latent-vs-true distance probe (``@<shift>`` likewise)

Each ``ensure_*`` stage takes a blocking file lock beside its folder (jobs of a parallel multirun share
the run folder), reuses a finished artifact (its marker json and its file exist) and otherwise builds
it and writes the marker last. Digests of the settings are part of the folder names, so changed
settings train new artifacts; paths inside the run folder enter them relative to it, so a run folder
that is moved, copied or named another way (relative or absolute ``out=``) keeps what it trained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from mpc._io import folder_lock, json_default, read_json, write_json

from benchmarks.suite.settings import SuiteSettings

__all__ = ["EncoderUnavailable", "digest", "stage_lock", "cell_name", "cell_path", "probe_path",
           "distance_probe_path", "ensemble_probe_path", "ensure_dataset", "ensure_encoder", "ensure_estimator",
           "ensure_distance", "ensure_model"]

log = logging.getLogger(__name__)


class EncoderUnavailable(RuntimeError):
    """A pretrained encoder whose weights are not on this machine (the row is reported as skipped)."""


def digest(obj) -> str:
    """Short stable hash of a JSON-able settings object (names artifact folders)."""
    text = json.dumps(obj, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def stage_lock(path: Path):
    """Block until this process holds the lock ``<path>.lock`` beside ``path`` (a folder or a file)."""
    path = Path(path)
    return folder_lock(path.parent, f"the suite stage {path.name}", wait=True, name=f"{path.name}.lock")


def _at(shift: str) -> str:
    return f"@{shift}" if shift else ""


def cell_name(env: str, encoder: str, planner: str, shift: str = "") -> str:
    """``<env>__<encoder>__<planner>`` (baselines: ``<env>__<policy>__none``), ``@<shift>`` appended
    for an evaluation under a distribution shift."""
    return f"{env}__{encoder}__{planner}{_at(shift)}"


def cell_path(run: Path, env: str, encoder: str, planner: str, shift: str = "") -> Path:
    """The result json of one cell; its evaluation outputs go to the folder of the same stem."""
    return Path(run) / "cells" / f"{cell_name(env, encoder, planner, shift)}.json"


def probe_path(run: Path, env: str, encoder: str, shift: str = "") -> Path:
    """The latent probe json of ``(env, encoder)`` (under ``shift``)."""
    return Path(run) / "probes" / f"{env}__{encoder}{_at(shift)}.json"


def distance_probe_path(run: Path, env: str, encoder: str) -> Path:
    """The probe json of ``(env, encoder)``'s temporal distance (``eval.distance``)."""
    return Path(run) / "probes" / f"{env}__{encoder}.distance.json"


def ensemble_probe_path(run: Path, env: str, encoder: str) -> Path:
    """The ensemble probe json of ``(env, encoder)`` (world models with K > 1 members)."""
    return Path(run) / "probes" / f"{env}__{encoder}.ensemble.json"


def _in_run(suite: SuiteSettings, path) -> str:
    """``path`` relative to the run folder when it lies inside it (else as given): digests built from it
    stay the same when the run folder is moved, copied or named another way (relative or absolute)."""
    try:
        return Path(path).resolve().relative_to(Path(suite.out).resolve()).as_posix()
    except ValueError:
        return str(path)


def _spellings(path) -> list[str]:
    """The ways an earlier run may have written ``path`` into a digest: as given, absolute, relative to
    the working directory."""
    p = Path(path)
    return list(dict.fromkeys([str(p), str(p.resolve()), os.path.relpath(p.resolve())]))


def _artifact_folder(parent: Path, name: str, settings: dict, earlier: list[dict]) -> Path:
    """``parent/<name>-<digest of settings>``; when that does not exist but a finished folder named by
    one of the ``earlier`` settings does (runs from before digests took paths relative to the run
    folder), that one, so those runs keep their trained artifacts."""
    folder = parent / f"{name}-{digest(settings)}"
    if not folder.exists():
        for old in (parent / f"{name}-{digest(e)}" for e in earlier):
            if (old / "train_time.json").exists():
                return old
    return folder


def _reuse_or_build(folder: Path, artifact: Path, build) -> float:
    """Under the folder's lock: the seconds recorded by a finished build, or ``build()`` timed now."""
    marker = folder / "train_time.json"
    with stage_lock(folder):
        done = read_json(marker)
        if done is None or not artifact.exists():
            t0 = time.perf_counter()
            build()
            done = {"seconds": time.perf_counter() - t0}
            write_json(marker, done)
    return float(done["seconds"])


# --- stage 1: data --------------------------------------------------------------------------------
def _dataset_differences(meta: dict, env: str, options: dict, image_size: int, action_repeat: int, data) -> list[str]:
    """What differs between a dataset's ``dataset.json`` and the collection an entry asks for."""
    from mpc._config import to_plain as plain

    want = {"env": env, "episodes": data.episodes, "steps": data.steps, "policy": data.policy, "seed": data.seed,
            "policy_options": data.policy_options, "image_size": image_size}
    differ = [f"{k}: {meta.get(k)!r} there, {v!r} here" for k, v in want.items() if plain(meta.get(k)) != plain(v)]
    recorded = meta.get("env_options") or {}
    for k, v in {**options, "action_repeat": action_repeat}.items():
        if k in recorded and plain(recorded[k]) != plain(v):
            differ.append(f"{k}: {recorded[k]!r} there, {v!r} here")
    return differ


def ensure_dataset(suite: SuiteSettings, env: str) -> tuple[Path, float]:
    """Collect (or reuse) the exploration dataset of ``env``. Returns ``(dataset dir, seconds)``."""
    from mpc.data import collect

    es = suite.envs[env]
    opts, image_size, action_repeat = es.collect_options
    data = es.data
    out = suite.out / "data" / es.data_name  # an entry with ``data_from`` reuses that entry's folder
    marker = out / "suite_collect.json"
    with stage_lock(out):
        done = read_json(marker)
        if done is not None and (out / "stats.json").exists():
            differ = _dataset_differences(read_json(out / "dataset.json") or {}, es.env, opts, image_size,
                                          action_repeat, data)
            if differ:
                raise ValueError(
                    f"{out} holds data collected with other settings than the suite's entry {env!r} now asks "
                    f"for ({'; '.join(differ)}): its models and cells would not be this config's. Run into a new "
                    f"folder (out=...), or delete {out} and what was made from it (the entry's encoders/, estimators/, "
                    f"models/ and cells/) to collect again")
            return out, float(done["seconds"])
        t0 = time.perf_counter()
        collect(es.env, out, episodes=data.episodes, steps=data.steps, policy=data.policy, seed=data.seed,
                workers=suite.workers, env_options=opts, image_size=image_size, action_repeat=action_repeat,
                policy_options=data.policy_options, progress=suite.progress)
        seconds = time.perf_counter() - t0
        write_json(marker, {"seconds": seconds})
    log.info("dataset %s ready (%.1f s)", out, seconds)
    return out, seconds


# --- stage 2: encoder -----------------------------------------------------------------------------
def ensure_encoder(suite: SuiteSettings, env: str, encoder: str, data_dir: Path):
    """Build the frozen encoder of a cell, training a trainable backend first (or reusing it).

    Returns:
        ``(encoder, settings, seconds)``: ``settings`` are the ``make_encoder`` options (with
        ``checkpoint`` for trainable backends), ``seconds`` the training time (0 for pretrained).

    Raises:
        EncoderUnavailable: a pretrained backend without local weights.
        ValueError: a trainable backend the suite cannot train.
    """
    import encoders
    from mpc.training import CHECKPOINT_NAME, TRAINABLE, train_encoder

    es = suite.encoders[encoder]
    name, options = es.name, dict(es.options)
    if name not in TRAINABLE:
        try:
            enc = encoders.make_encoder(name, **options)
        except FileNotFoundError as e:
            raise EncoderUnavailable(str(e)) from e
        if enc.trainable:
            raise ValueError(f"encoder {name!r} is trainable but not one of {TRAINABLE}; the suite cannot train it")
        return enc, {"name": name, **options}, 0.0
    train = es.train
    settings = {"name": name, "options": options, "train": train}
    folder = _artifact_folder(suite.out / "encoders", f"{suite.envs[env].data_name}__{encoder}",  # one per dataset
                              {"data": _in_run(suite, data_dir), **settings},
                              [{"data": d, **settings} for d in _spellings(data_dir)])
    ckpt = folder / CHECKPOINT_NAME
    seconds = _reuse_or_build(folder, ckpt, lambda: train_encoder(
        name, data_dir, folder, steps=int(train["steps"]), batch_size=int(train["batch_size"]),
        lr=float(train["lr"]), encoder_options=options, save_every=10 ** 9, seed=int(train.get("seed", 0)),
        device=suite.device, progress=suite.progress, frameskip=int(train["frameskip"])))
    enc = encoders.make_encoder(name, checkpoint=str(ckpt))
    return enc, {"name": name, "checkpoint": str(ckpt)}, seconds


def ensure_estimator(suite: SuiteSettings, env: str, data_dir: Path) -> Path:
    """Train (or reuse) the proprio estimator of an env entry's dataset (one per dataset and settings):
    the goal's proprio read from the goal image (``eval.goal_proprio: image``). Returns its file."""
    from mpc.proprio_estimator import ESTIMATOR_FILE, train_proprio_estimator

    options = dict(suite.envs[env].eval.estimator)
    settings = {"estimator": options, "seed": suite.seed}
    folder = _artifact_folder(suite.out / "estimators", suite.envs[env].data_name,
                              {"data": _in_run(suite, data_dir), **settings},
                              [{"data": d, **settings} for d in _spellings(data_dir)])
    path = folder / ESTIMATOR_FILE
    _reuse_or_build(folder, path, lambda: train_proprio_estimator(
        data_dir, folder, seed=suite.seed, device=suite.device, progress=suite.progress, **options))
    return path


def ensure_distance(suite: SuiteSettings, env: str, encoder: str, data_dir: Path, fingerprint: str) -> Path:
    """Train (or reuse) the temporal distance of ``(env, encoder)`` (``eval.distance``): fit on the
    latent cache the world model was trained from (the encoder ``fingerprint``). Returns its file."""
    from mpc.temporal_distance import DISTANCE_FILE, train_temporal_distance

    options = dict(suite.envs[env].eval.distance or {})
    settings = {"distance": options, "encoder": fingerprint, "seed": suite.seed}
    folder = _artifact_folder(suite.out / "distances", f"{env}__{encoder}",
                              {"data": _in_run(suite, data_dir), **settings},
                              [{"data": d, **settings} for d in _spellings(data_dir)])
    path = folder / DISTANCE_FILE
    _reuse_or_build(folder, path, lambda: train_temporal_distance(
        data_dir, fingerprint, folder, seed=suite.seed, device=suite.device, progress=suite.progress, **options))
    return path


# --- stage 3: world model ---------------------------------------------------------------------------
# model options added to the presets after run folders existed, at their default values: left out of a
# model's digest, so those runs' world models stay valid (a non-default value is part of the digest)
_LATER_DEFAULTS = {"ensemble": 1, "ensemble_kind": "full"}


def _without_later_defaults(model: dict) -> dict:
    return {k: v for k, v in model.items() if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}


def ensure_model(suite: SuiteSettings, env: str, encoder: str, enc_settings: dict,
                 data_dir: Path) -> tuple[Path, float]:
    """Train (or reuse) the world model of ``(env, encoder)``. Returns ``(checkpoint path, seconds)``."""
    from mpc.training import train as train_world_model

    model, train = suite.model_config(env, encoder), suite.train_for(env, encoder)
    settings = {"model": _without_later_defaults(model), "train": train, "seed": suite.seed}
    portable = {**enc_settings, **({"checkpoint": _in_run(suite, enc_settings["checkpoint"])}
                                   if "checkpoint" in enc_settings else {})}
    folder = _artifact_folder(suite.out / "models", f"{env}__{encoder}",
                              {"data": _in_run(suite, data_dir), "encoder": portable, **settings},
                              [{"data": d, "encoder": {**enc_settings, **({"checkpoint": c} if c else {})}, **settings}
                               for d, c in zip(_spellings(data_dir), _spellings(enc_settings["checkpoint"])
                                               if "checkpoint" in enc_settings else [None] * 3)])
    ckpt = folder / "checkpoints" / "model_latest.safetensors"
    def build():
        train_world_model({"env": {"name": suite.envs[env].env, **suite.envs[env].options}, "encoder": enc_settings,
                           "model": model, "train": train, "data": str(data_dir), "out": str(folder),
                           "resume": (folder / "checkpoints" / "train_state.pt").exists(),
                           "seed": suite.seed, "device": suite.device, "encode_batch": 256,
                           "progress": suite.progress})

    seconds = _reuse_or_build(folder, ckpt, build)
    # a training resumed after an interruption: add the loop time of the processes that were cut short
    earlier = float((read_json(folder / "eval_metrics.json") or {}).get("train_seconds_earlier") or 0.0)
    return ckpt, seconds + earlier
