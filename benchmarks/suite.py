"""``wmpc bench``: the goal-reaching benchmark suite (envs x encoders x planners -> one report).

``wmpc bench suite=quick`` (2 CPU cores, minutes) and ``wmpc bench suite=dino_wm`` (the DINO-WM
protocol, for a GPU) run, for every env of the suite:

1. collect goal-free random exploration data (:func:`mpc.data.collect`, seeds ``0 ..``);
2. for every encoder: train it if it is trainable (:func:`mpc.train_encoder.train_encoder`), or use
   its pretrained weights (a ``dinov2`` row without weights says ``skipped: no DINOv2 weights``,
   it never runs an untrained DINOv2), then train a world model on its cached latents
   (:func:`mpc.train.train`);
3. for every planner: closed-loop goal reaching on held-out evaluation goals
   (:func:`mpc.evaluate.evaluate`, seeds from ``eval.seed`` = 1,000,000 on, far from collection);
4. random-action and oracle baselines, and a probe of latent distance to the goal against true
   distance along straight lines through the arena (Spearman rank correlation per backend);
5. ``report.md``, ``results.csv``, ``results.json``, plots and GIFs in the run folder.

Run folder (``out``, default ``runs/bench/<suite>``)::

    data/<env>/                         datasets (mpc.data layout)
    encoders/<env>__<encoder>-<digest>/ encoder.safetensors + train_time.json (trainable backends)
    models/<env>__<encoder>-<digest>/   world-model training run (mpc.train layout) + train_time.json
    cells/<env>__<encoder>__<planner>.json   one result per cell, written atomically
    cells/<env>__<encoder>__<planner>/  evaluation outputs (results.json, episode GIFs)
    probes/<env>__<encoder>.json        latent-vs-true distance probe
    report.md, results.csv, results.json, success_vs_time.png, latent_vs_true_<env>.png

Resuming: every stage reuses what a previous invocation with the same out folder finished (a cell
whose json says ``status: ok`` is never re-run; datasets, encoders and models are reused; digests
of their settings are part of the folder names, so changed settings train new ones). Interrupting
a suite therefore loses at most the stage in progress. Concurrent jobs of a hydra multirun
(``-m encoder=vae,jepa planner=cem,gd`` with a parallel launcher) share the folder and take a file
lock around each stage, so two jobs never train the same model twice.

``env=``, ``encoder=`` and ``planner=`` on the command line restrict the suite to those cells
(comma lists sweep with ``-m``); ``suite=<name>`` picks ``configs/bench/<name>.yaml``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

__all__ = ["bench_command", "run_suite", "latent_probe", "monotonicity", "translate_argv",
           "DINOV2_SKIP", "CELL_FORMAT"]

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CELL_FORMAT = 1
DINOV2_SKIP = "skipped: no DINOv2 weights (see README)"
BASELINES = ("random", "oracle")


# --- small pieces ---------------------------------------------------------------------------------
def _write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` through a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (jobs of a parallel multirun share the run folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network file systems): no locking
            pass
        yield


def _digest(obj) -> str:
    """Short stable hash of a JSON-able settings object (names artifact folders)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _plain(cfg):
    """OmegaConf node -> plain Python containers (resolved); anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _load_config(group: str, name: str) -> dict:
    """``configs/<group>/<name>.yaml`` as a dict (its own ``defaults`` are not composed).

    Raises:
        ValueError: no such file.
    """
    from omegaconf import OmegaConf

    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise ValueError(f"no config {path}; known {group} configs: {', '.join(known)}")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    base: dict = {}
    for parent in data.pop("defaults", None) or []:  # same-group parents, e.g. train/quick -> default
        if isinstance(parent, str) and parent != "_self_":
            base = _deep_merge(base, _load_config(group, parent))
    return _deep_merge(base, data)


def _deep_merge(base: dict, over: dict | None) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _cell_name(env: str, encoder: str, planner: str) -> str:
    return f"{env}__{encoder}__{planner}"


def _count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


# --- settings of one env / encoder / planner --------------------------------------------------------
def env_settings(bench: dict, env: str) -> dict:
    """Constructor options of ``env``: ``configs/env/<env>.yaml`` with the suite's ``options`` on top."""
    opts = _load_config("env", env) if (CONFIG_DIR / "env" / f"{env}.yaml").is_file() else {"name": env}
    opts = _deep_merge(opts, bench["envs"][env].get("options"))
    opts.pop("name", None)
    return opts


def encoder_settings(bench: dict, encoder: str) -> dict:
    """``{"name", "options", "train", "model"}`` of one encoder entry of the suite."""
    entry = dict(bench["encoders"][encoder] or {})
    name = entry.get("name", encoder)
    base = _load_config("encoder", name) if (CONFIG_DIR / "encoder" / f"{name}.yaml").is_file() else {}
    for key in ("name", "checkpoint", "weights"):
        base.pop(key, None)
    options = _deep_merge(base, entry.get("options"))
    options = {k: v for k, v in options.items() if v is not None}
    return {"name": name, "options": options, "train": dict(entry.get("train") or {}),
            "model": dict(entry.get("model") or {})}


def planner_settings(bench: dict, planner: str) -> tuple[str, int, dict]:
    """``(registered name, horizon, options)`` of one planner entry of the suite."""
    entry = dict(bench["planners"][planner] or {})
    name = entry.pop("name", planner)
    base = _load_config("planner", entry.pop("config", name))
    base.pop("name", None)
    options = _deep_merge(base, entry)
    horizon = int(options.pop("horizon", 5))
    options.pop("seed", None)  # evaluation seeds the planner (one seed per batch of episodes)
    return name, horizon, options


# --- stage 1: data --------------------------------------------------------------------------------
def ensure_dataset(run: Path, bench: dict, env: str, workers: int, progress: bool) -> tuple[Path, float]:
    """Collect (or reuse) the exploration dataset of ``env``. Returns ``(dataset dir, seconds)``."""
    from mpc.data import collect

    data_cfg = dict(bench["envs"][env].get("data") or {})
    opts = env_settings(bench, env)
    image_size, frameskip = int(opts.pop("image_size", 64)), int(opts.pop("frameskip", 1))
    out = run / "data" / env
    marker = out / "suite_collect.json"
    with _locked(out):
        done = _read_json(marker)
        if done is not None and (out / "stats.json").exists():
            return out, float(done["seconds"])
        t0 = time.perf_counter()
        collect(env, out, episodes=int(data_cfg.get("episodes", 100)), steps=int(data_cfg.get("steps", 50)),
                policy=data_cfg.get("policy", "uniform"), seed=int(data_cfg.get("seed", 0)),
                workers=int(workers), env_options=opts, image_size=image_size, frameskip=frameskip,
                policy_options=data_cfg.get("policy_options") or {}, progress=progress)
        seconds = time.perf_counter() - t0
        _write_json_atomic(marker, {"seconds": seconds})
    log.info("dataset %s ready (%.1f s)", out, seconds)
    return out, seconds


# --- stage 2: encoder -----------------------------------------------------------------------------
class EncoderUnavailable(RuntimeError):
    """A pretrained encoder whose weights are not on this machine (the row is reported as skipped)."""


def ensure_encoder(run: Path, bench: dict, env: str, encoder: str, data_dir: Path, device: str,
                   progress: bool):
    """Build the frozen encoder of a cell, training a trainable backend first (or reusing it).

    Returns:
        ``(encoder, settings, seconds)``: ``settings`` are the ``make_encoder`` options (with
        ``checkpoint`` for trainable backends), ``seconds`` the training time (0 for pretrained).

    Raises:
        EncoderUnavailable: a pretrained backend without local weights.
    """
    import encoders
    from mpc.train_encoder import CHECKPOINT_NAME, TRAINABLE, train_encoder

    es = encoder_settings(bench, encoder)
    name, options = es["name"], dict(es["options"])
    if name not in TRAINABLE:
        try:
            enc = encoders.make_encoder(name, **options)
        except FileNotFoundError as e:
            raise EncoderUnavailable(str(e)) from e
        if enc.trainable:
            raise ValueError(f"encoder {name!r} is trainable but not one of {TRAINABLE}; the suite cannot train it")
        return enc, {"name": name, **options}, 0.0
    train = {"steps": 1000, "batch_size": 64, "lr": 1e-3, "frameskip": 1, **es["train"]}
    key = _digest({"data": str(data_dir), "name": name, "options": options, "train": train})
    folder = run / "encoders" / f"{env}__{encoder}-{key}"
    ckpt, marker = folder / CHECKPOINT_NAME, folder / "train_time.json"
    with _locked(folder):
        done = _read_json(marker)
        if done is None or not ckpt.exists():
            t0 = time.perf_counter()
            train_encoder(name, data_dir, folder, steps=int(train["steps"]), batch_size=int(train["batch_size"]),
                          lr=float(train["lr"]), encoder_options=options, save_every=10 ** 9,
                          seed=int(train.get("seed", 0)), device=device, progress=progress,
                          frameskip=int(train["frameskip"]))
            done = {"seconds": time.perf_counter() - t0}
            _write_json_atomic(marker, done)
    enc = encoders.make_encoder(name, checkpoint=str(ckpt))
    return enc, {"name": name, "checkpoint": str(ckpt)}, float(done["seconds"])


# --- stage 3: world model ---------------------------------------------------------------------------
def ensure_model(run: Path, bench: dict, cfg, env: str, encoder: str, enc_settings: dict, data_dir: Path,
                 device: str):
    """Train (or reuse) the world model of ``(env, encoder)``. Returns ``(checkpoint path, seconds)``."""
    from mpc.train import train as train_world_model

    es = encoder_settings(bench, encoder)
    model = _load_config("model", bench["model"])
    for changes in (bench.get("model_options"), bench["envs"][env].get("model"), es["model"]):
        model = _deep_merge(model, changes)  # suite, then env, then encoder changes to the preset
    sched = _deep_merge(_load_config("train", bench.get("train_preset", "default")), bench.get("train"))
    env_cfg = {"name": env, **env_settings(bench, env)}
    key = _digest({"data": str(data_dir), "encoder": enc_settings, "model": model, "train": sched,
                   "seed": int(cfg.seed)})
    folder = run / "models" / f"{env}__{encoder}-{key}"
    ckpt, marker = folder / "checkpoints" / "model_latest.safetensors", folder / "train_time.json"
    with _locked(folder):
        done = _read_json(marker)
        if done is None or not ckpt.exists():
            t0 = time.perf_counter()
            train_cfg = {"env": env_cfg, "encoder": enc_settings, "model": model, "train": sched,
                         "data": str(data_dir), "out": str(folder),
                         "resume": (folder / "checkpoints" / "train_state.pt").exists(),
                         "seed": int(cfg.seed), "device": device, "encode_batch": 256}
            train_world_model(train_cfg)
            done = {"seconds": time.perf_counter() - t0}
            _write_json_atomic(marker, done)
    return ckpt, float(done["seconds"])


# --- stage 4: latent distance against true distance ------------------------------------------------
def _state_at(unwrapped, pos: np.ndarray) -> np.ndarray:
    """A resting state with the agent at ``pos``: the env's ``state_at`` when it has one, else a
    zero state whose first two entries are the position (pointmass: x, y, vx, vy; wall: x, y)."""
    fn = getattr(unwrapped, "state_at", None)
    if fn is not None:
        return np.asarray(fn(pos), np.float64)
    s = np.zeros_like(unwrapped.get_state())
    s[:2] = pos
    return s


def monotonicity(true: np.ndarray, latent: np.ndarray, bins: int = 10) -> dict:
    """How well latent distance follows true distance.

    Args:
        true, latent: ``(M,)`` paired distances.
        bins: equal-width bins of true distance for the rising fraction.

    Returns:
        ``{"spearman": rank correlation, "rising_fraction": share of consecutive bins whose mean
        latent distance is larger than the previous bin's}``.
    """
    from scipy.stats import spearmanr

    true, latent = np.asarray(true, float), np.asarray(latent, float)
    rho = float(spearmanr(true, latent).statistic) if np.ptp(latent) > 0 else 0.0
    edges = np.linspace(true.min(), true.max(), bins + 1)
    which = np.clip(np.digitize(true, edges[1:-1]), 0, bins - 1)
    means = [latent[which == b].mean() for b in range(bins) if np.any(which == b)]
    rising = float(np.mean(np.diff(means) > 0)) if len(means) > 1 else 0.0
    return {"spearman": rho if np.isfinite(rho) else 0.0, "rising_fraction": rising}


def latent_probe(env_name: str, env_options: dict, encoder, lines: list, points: int = 25) -> dict:
    """Latent distance to the goal against true distance along straight lines through the arena.

    For each line (two end positions), ``points`` resting states are rendered along it
    (``env.unwrapped.render_state``); each end and the middle serve in turn as the goal, and every
    state of the line gives one pair (true distance = ``env.unwrapped.goal_distance``, latent
    distance = mean squared token difference, as the planning objective measures it).

    Args:
        env_name, env_options: the env (``envs.make_env``).
        encoder: a frozen encoder with ``encode(images) -> (B, N, D)``.
        lines: ``[[[x0, y0], [x1, y1]], ...]`` agent positions in the env's units.
        points: states per line.

    Returns:
        dict with ``true`` and ``latent`` lists and the :func:`monotonicity` numbers.
    """
    import envs as envs_pkg
    import torch

    env = envs_pkg.make_env(env_name, **env_options)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        true_all, latent_all = [], []
        for a, b in lines:
            a, b = np.asarray(a, float), np.asarray(b, float)
            pos = a[None] + np.linspace(0.0, 1.0, int(points))[:, None] * (b - a)[None]  # (M, 2)
            states = np.stack([_state_at(u, p) for p in pos])
            images = np.stack([u.render_state(s) for s in states])
            with torch.no_grad():
                z = encoder.encode(images).float().cpu()  # (M, N, D)
            for g in (0, len(states) // 2, len(states) - 1):
                true_all.append([u.goal_distance(s, states[g]) for s in states])
                latent_all.append(((z - z[g:g + 1]) ** 2).mean(dim=(1, 2)).numpy())
    finally:
        env.close()
    true, latent = np.concatenate(true_all), np.concatenate(latent_all)
    return {"true": true.tolist(), "latent": latent.tolist(), **monotonicity(true, latent)}


# --- one cell -------------------------------------------------------------------------------------
def _eval_settings(bench: dict, env: str) -> dict:
    return _deep_merge(bench["eval"], bench["envs"][env].get("eval"))


def _result_fields(res, ev: dict) -> dict:
    lo, hi = res.success_ci95
    return {"success_rate": res.success_rate, "ci_low": lo, "ci_high": hi, "episodes": res.episodes,
            "steps": res.steps, "final_success_rate": res.final_success_rate,
            "plan_time_ms": None if res.mean_plan_time_s is None else 1e3 * res.mean_plan_time_s,
            "mean_initial_distance": res.mean_initial_distance, "mean_final_distance": res.mean_final_distance,
            "labels": ",".join(res.labels), "batch_envs": int(ev["batch_envs"])}


def _gifs(folder: Path, run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in sorted(folder.glob("episode_*.gif"))]


def run_baseline(run: Path, bench: dict, env: str, policy: str, progress: bool) -> dict:
    """Random-action or oracle row of ``env`` (same evaluation goals as the planner rows)."""
    from mpc.evaluate import evaluate

    ev = _eval_settings(bench, env)
    folder = run / "cells" / _cell_name(env, policy, "none")
    t0 = time.perf_counter()
    res = evaluate(env, policy=policy, episodes=int(ev["episodes"]), steps=int(ev["steps"]),
                   batch_envs=int(ev["batch_envs"]), seed=int(ev["seed"]), env_options=env_settings(bench, env),
                   videos=int(ev.get("baseline_videos", 0)), out=folder, progress=progress)
    return {"env": env, "encoder": "-", "planner": "-", "policy": policy, "status": "ok",
            **_result_fields(res, ev), "plan_time_ms": None, "eval_time_s": time.perf_counter() - t0,
            "gifs": _gifs(folder, run)}


def run_cell(run: Path, bench: dict, cfg, env: str, encoder: str, planners: list[str], device: str,
             progress: bool, probe_path: Path) -> dict[str, dict]:
    """Train what ``(env, encoder)`` needs, then evaluate each planner. Returns rows by planner.

    Raises:
        EncoderUnavailable: pretrained weights missing (the caller writes skipped rows).
    """
    import torch

    from mpc.evaluate import evaluate
    from mpc.world_model import WorldModel

    data_dir, _ = ensure_dataset(run, bench, env, int(cfg.workers), progress)
    enc, enc_settings, enc_seconds = ensure_encoder(run, bench, env, encoder, data_dir, device, progress)
    ckpt, model_seconds = ensure_model(run, bench, cfg, env, encoder, enc_settings, data_dir, device)
    enc = enc.to(device)
    model = WorldModel.load(ckpt, encoder=enc, device=device)

    probe_cfg = bench["envs"][env].get("probe")
    if probe_cfg and _read_json(probe_path) is None:
        probe = latent_probe(env, env_settings(bench, env), enc, probe_cfg["lines"], int(probe_cfg.get("points", 25)))
        _write_json_atomic(probe_path, {"env": env, "encoder": encoder, **probe})

    ev = _eval_settings(bench, env)
    rows = {}
    for planner in planners:
        path = run / "cells" / f"{_cell_name(env, encoder, planner)}.json"
        old = _read_json(path)
        if old is not None and old.get("status") == "ok":
            rows[planner] = old
            continue
        pname, horizon, popts = planner_settings(bench, planner)
        folder = path.with_suffix("")
        t0 = time.perf_counter()
        res = evaluate(env, policy="planner", model=model, planner=pname, planner_options=popts,
                       objective=ev.get("objective", "last"), alpha=float(ev.get("alpha", 0.0)),
                       episodes=int(ev["episodes"]), steps=int(ev["steps"]), horizon=horizon,
                       replan_every=int(ev.get("replan_every", 1)), batch_envs=int(ev["batch_envs"]),
                       seed=int(ev["seed"]), env_options=env_settings(bench, env), videos=int(ev.get("videos", 1)),
                       out=folder, device=device, progress=progress)
        row = {"env": env, "encoder": encoder, "planner": planner, "policy": "planner", "status": "ok",
               **_result_fields(res, ev), "eval_time_s": time.perf_counter() - t0,
               "encoder_train_time_s": enc_seconds, "predictor_train_time_s": model_seconds,
               "train_time_s": enc_seconds + model_seconds,
               "encoder_params": _count_params(enc), "predictor_params": _count_params(model),
               "num_tokens": int(model.num_tokens), "token_dim": int(model.token_dim),
               "model_checkpoint": str(ckpt.relative_to(run)), "gifs": _gifs(folder, run),
               "format": CELL_FORMAT, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_json_atomic(path, row)
        rows[planner] = row
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


# --- the suite ------------------------------------------------------------------------------------
def _selection(value, available: list[str], what: str) -> list[str]:
    """``None`` -> all of ``available``; a name or list -> those (checked)."""
    if value is None:
        return list(available)
    names = [value] if isinstance(value, str) else list(value)
    names = [n.strip() for x in names for n in str(x).split(",") if n.strip()]
    bad = [n for n in names if n not in available]
    if bad:
        raise ValueError(f"{what}={','.join(bad)} is not part of this suite; it has {what}s "
                         f"{', '.join(available)} (pick another suite= or add it to configs/bench/)")
    return names


def _skip_row(env: str, encoder: str, planner: str, status: str) -> dict:
    return {"env": env, "encoder": encoder, "planner": planner, "policy": "planner", "status": status}


def _run_baselines(cfg: dict, env: str) -> None:
    """Random-action and oracle rows of ``env`` (skipped when finished earlier)."""
    bench, run = cfg["bench"], Path(cfg["out"])
    for policy in bench.get("baselines", BASELINES):
        path = run / "cells" / f"{_cell_name(env, policy, 'none')}.json"
        with _locked(path):
            if (_read_json(path) or {}).get("status") != "ok":
                _write_json_atomic(path, {**run_baseline(run, bench, env, policy, bool(cfg["progress"])),
                                          "format": CELL_FORMAT})


def _run_encoder(cfg: dict, env: str, encoder: str, planners: list[str]) -> None:
    """Every planner cell of ``(env, encoder)``; a missing pretrained encoder or a failure becomes rows."""
    from omegaconf import OmegaConf

    bench, run = cfg["bench"], Path(cfg["out"])
    todo = [p for p in planners
            if (_read_json(run / "cells" / f"{_cell_name(env, encoder, p)}.json") or {}).get("status") != "ok"]
    probe_path = run / "probes" / f"{env}__{encoder}.json"
    if not todo and (not bench["envs"][env].get("probe") or probe_path.exists()):
        log.info("%s / %s: every cell finished earlier, skipped", env, encoder)
        return
    try:
        run_cell(run, bench, OmegaConf.create(cfg), env, encoder, planners, _device(cfg["device"]),
                 bool(cfg["progress"]), probe_path)
    except EncoderUnavailable as e:
        log.warning("%s / %s skipped: %s", env, encoder, e)
        status = DINOV2_SKIP if encoder_settings(bench, encoder)["name"].startswith("dinov2") \
            else f"skipped: no weights for {encoder}"
        for p in todo:
            _write_json_atomic(run / "cells" / f"{_cell_name(env, encoder, p)}.json",
                               {**_skip_row(env, encoder, p, status), "format": CELL_FORMAT})
    except Exception as e:  # noqa: BLE001 - recorded in the report, traceback in the log
        if cfg.get("fail_fast", False):
            raise
        log.error("%s / %s failed:\n%s", env, encoder, traceback.format_exc())
        for p in todo:
            _write_json_atomic(run / "cells" / f"{_cell_name(env, encoder, p)}.json",
                               {**_skip_row(env, encoder, p, f"failed: {type(e).__name__}: {e}"[:300]),
                                "format": CELL_FORMAT})


def _run_unit(cfg: dict, unit: tuple) -> None:
    if unit[0] == "baselines":
        _run_baselines(cfg, unit[1])
    else:
        _run_encoder(cfg, *unit[1:])


def _preload_compiler() -> None:
    """Import torch's compiler stack (and triton) now, before any MuJoCo EGL context exists.

    Optimizers import ``torch._dynamo`` (and with it triton) on first construction; when that import
    happens after a process has rendered with EGL, it crashes with a segmentation fault on some
    driver stacks. The suite renders (baselines, probes) and trains in the same processes.
    """
    import torch._dynamo  # noqa: F401


def _init_worker(threads: int | None) -> None:
    """Worker process of a parallel suite: torch threads and plain log lines."""
    import torch

    _preload_compiler()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(processName)s][%(name)s] %(message)s")
    if threads:
        torch.set_num_threads(int(threads))


def run_suite(cfg) -> Path:
    """Run (or resume) the suite described by ``cfg`` (the composed ``configs/bench.yaml``).

    Datasets are collected first (``workers`` processes each); then the baselines of each env and
    every ``(env, encoder)`` unit (train encoder, train world model, probe, evaluate each planner) run
    ``jobs`` at a time in separate processes (``jobs: 1``: in this process), each with ``threads``
    torch threads.

    Returns:
        the run folder (holding ``report.md``).

    Raises:
        ValueError: an ``env``/``encoder``/``planner`` selection outside the suite.
    """
    import torch

    c = _plain(cfg) if not isinstance(cfg, dict) else dict(cfg)
    bench = c["bench"]
    run = Path(c["out"])
    run.mkdir(parents=True, exist_ok=True)
    device = _device(c.get("device"))
    progress = bool(c.get("progress", False))
    t_start = time.perf_counter()
    sel = c.get("select") or {}
    env_list = _selection(sel.get("env"), list(bench["envs"]), "env")
    enc_list = _selection(sel.get("encoder"), list(bench["encoders"]), "encoder")
    plan_list = _selection(sel.get("planner"), list(bench["planners"]), "planner")
    jobs = int(c.get("jobs") or bench.get("jobs") or 1)
    threads = c.get("threads") or bench.get("threads")
    log.info("suite %s in %s: envs %s, encoders %s, planners %s (device %s, %d job(s))", bench["name"], run,
             env_list, enc_list, plan_list, device, jobs)
    if threads:
        torch.set_num_threads(int(threads))
    _preload_compiler()
    for env in env_list:
        ensure_dataset(run, bench, env, int(c.get("workers", 1)), progress)
    units = [("baselines", env) for env in env_list]
    units += [("encoder", env, enc, plan_list) for enc in enc_list for env in env_list]
    if jobs <= 1:
        for unit in units:
            _run_unit(c, unit)
    else:
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked GL or OpenMP state
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(_run_unit, c, unit) for unit in units]
            for f in cf.as_completed(futures):
                f.result()  # re-raise a worker's error (fail_fast) here
    return write_suite_report(run, bench, c, time.perf_counter() - t_start, device)


# --- report ---------------------------------------------------------------------------------------
def _machine() -> str:
    import torch

    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {cpu}"
    return cpu


def _row_order(bench: dict):
    envs = list(bench["envs"])
    encs = list(bench["encoders"])
    plans = list(bench["planners"])

    def key(r):
        e = envs.index(r["env"]) if r["env"] in envs else len(envs)
        if r.get("policy") in BASELINES:
            return (e, 0, BASELINES.index(r["policy"]), 0)
        c = encs.index(r["encoder"]) if r["encoder"] in encs else len(encs)
        p = plans.index(r["planner"]) if r["planner"] in plans else len(plans)
        return (e, 1, c, p)
    return key


def write_suite_report(run: Path, bench: dict, cfg, seconds: float, device: str) -> Path:
    """Gather every cell and probe of ``run`` into the report files and plots. Returns report.md."""
    import torch

    from benchmarks.report import plot_latent_vs_true, plot_success_vs_time, write_report

    rows = []
    for path in sorted((run / "cells").glob("*.json")):
        row = _read_json(path)
        if row is not None:
            if row.get("policy") in BASELINES:
                row["encoder"] = f"({row['policy']} actions)" if row["policy"] == "random" else "(oracle)"
            rows.append(row)
    rows.sort(key=_row_order(bench))
    monot, curves_by_env = {}, {}
    for path in sorted((run / "probes").glob("*.json")):
        p = _read_json(path)
        if p is None:
            continue
        monot[f"{p['env']}/{p['encoder']}"] = {"spearman": p["spearman"], "rising_fraction": p["rising_fraction"]}
        curves_by_env.setdefault(p["env"], {})[p["encoder"]] = {"true": p["true"], "latent": p["latent"],
                                                                 "spearman": p["spearman"]}
    figures = {}
    if any(r.get("status") == "ok" and r.get("plan_time_ms") not in (None, "") for r in rows):
        plot_success_vs_time(rows, run / "success_vs_time.png")
        figures["success rate against planning time per replan"] = "success_vs_time.png"
    for env, curves in curves_by_env.items():
        name = f"latent_vs_true_{env}.png"
        plot_latent_vs_true(curves, run / name, title=f"{env}: latent vs true distance to the goal")
        figures[f"{env}: latent distance against true distance"] = name
    gifs = []
    for r in rows:
        if r.get("status") == "ok" and r.get("policy") == "planner" and r.get("gifs"):
            gifs.append(r["gifs"][0])
    compute = sum(float(r.get("eval_time_s") or 0) for r in rows)
    meta = {"suite": bench["name"], "machine": _machine(), "torch": torch.__version__, "device": device,
            "total_time_s": seconds, "run": str(run), "select": cfg.get("select"),
            "eval_seconds_all_cells": compute,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return write_report(run, rows, meta, monotonicity=monot, figures=figures, gifs=gifs[: int(bench.get("gifs", 6))])


# --- command --------------------------------------------------------------------------------------
_SELECT = re.compile(r"^(env|encoder|planner)=(.*)$")


def translate_argv(argv: list[str]) -> list[str]:
    """Command-line shorthands -> hydra overrides.

    ``suite=X`` picks the config group choice ``bench=X`` (configs/bench/X.yaml); ``env=``,
    ``encoder=`` and ``planner=`` (comma lists sweep under ``-m``) become ``select.<key>=`` (they
    restrict the suite to those cells; ``configs/env`` etc. are not composed by ``wmpc bench``).
    """
    out = []
    for a in argv:
        if a.startswith("suite="):
            a = "bench=" + a[len("suite="):]
        m = _SELECT.match(a)
        if m:
            a = f"select.{m.group(1)}={m.group(2)}"
        out.append(a)
    return out


def bench_command(argv: list[str]) -> int:
    """``wmpc bench suite=<quick|dino_wm> [env=..] [encoder=..] [planner=..] [out=DIR]`` (hydra; ``-m`` sweeps)."""
    from mpc.commands.cli import hydra_command

    def task(cfg):
        report = run_suite(cfg)
        print(f"report: {report}")
        return report

    return hydra_command("bench", task, translate_argv(argv), prog="wmpc bench")
