"""The scheduler: datasets first, then units of work (an env's baselines, an ``(env, encoder)``'s
planner cells) in this process or in a pool of ``jobs`` fresh processes, then the report.

A unit never raises for a failed cell unless ``fail_fast`` is set: a missing pretrained encoder or
an error becomes rows with a ``skipped: ...`` or ``failed: ...`` status (traceback in the log).
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import NamedTuple

from mpc._io import read_json, write_json

from benchmarks.suite.artifacts import (EncoderUnavailable, cell_path, distance_probe_path, ensemble_probe_path,
                                        ensure_dataset, probe_path, stage_lock)
from benchmarks.suite.cells import DINOV2_SKIP, conditions, reusable, run_baseline, run_cell, skip_row
from benchmarks.suite.report import write_suite_report
from benchmarks.suite.settings import SuiteSettings

__all__ = ["Unit", "run_suite"]

log = logging.getLogger(__name__)


class Unit(NamedTuple):
    """One unit of work: the baselines of ``env`` (``encoder`` None) or an encoder's planner cells."""

    env: str
    encoder: str | None = None
    planners: tuple[str, ...] = ()


def _finished(path: Path, settings: dict) -> bool:
    """A cell finished earlier under these settings (cells written before cells recorded their
    settings count as finished)."""
    return reusable(read_json(path), settings)


def _run_baselines(suite: SuiteSettings, env: str) -> None:
    """Random-action and oracle rows of ``env`` under each condition (skipped when finished earlier)."""
    for shift in conditions(suite, env):
        for policy in suite.baselines:
            path = cell_path(suite.out, env, policy, "none", shift)
            with stage_lock(path):
                if not _finished(path, suite.cell_settings(env, None, None, shift)):
                    write_json(path, run_baseline(suite, env, policy, shift))


def _run_encoder(suite: SuiteSettings, env: str, encoder: str, planners: tuple[str, ...]) -> None:
    """Every planner cell of ``(env, encoder)``; a missing pretrained encoder or a failure becomes rows."""
    run = suite.out
    shifts = conditions(suite, env)
    todo = [(p, s) for s in shifts for p in planners
            if not _finished(cell_path(run, env, encoder, p, s), suite.cell_settings(env, encoder, p, s))]
    probed = suite.envs[env].probe is None or all(probe_path(run, env, encoder, s).exists() for s in shifts)
    ensemble = int(suite.model_config(env, encoder).get("ensemble", 1) or 1) > 1
    probed = probed and (not ensemble or ensemble_probe_path(run, env, encoder).exists())
    probed = probed and (suite.envs[env].eval.distance is None or suite.envs[env].probe is None
                         or distance_probe_path(run, env, encoder).exists())
    if not todo and probed:
        log.info("%s / %s: every cell finished earlier, skipped", env, encoder)
        return
    try:
        run_cell(suite, env, encoder, list(planners))
    except EncoderUnavailable as e:
        log.warning("%s / %s skipped: %s", env, encoder, e)
        status = DINOV2_SKIP if suite.encoders[encoder].name.startswith("dinov2") \
            else f"skipped: no weights for {encoder}"
        for p, s in todo:
            write_json(cell_path(run, env, encoder, p, s), skip_row(env, encoder, p, status, s))
    except Exception as e:  # noqa: BLE001 - recorded in the report, traceback in the log
        if suite.fail_fast:
            raise
        log.error("%s / %s failed:\n%s", env, encoder, traceback.format_exc())
        for p, s in todo:
            write_json(cell_path(run, env, encoder, p, s),
                       skip_row(env, encoder, p, f"failed: {type(e).__name__}: {e}"[:300], s))


def _run_unit(suite: SuiteSettings, unit: Unit) -> None:
    if unit.encoder is None:
        _run_baselines(suite, unit.env)
    else:
        _run_encoder(suite, unit.env, unit.encoder, unit.planners)


def _preload_compiler() -> None:
    """Import torch's compiler stack (and triton) now, before any MuJoCo EGL context exists.

    Optimizers import ``torch._dynamo`` (and with it triton) on first construction; when that import
    happens after a process has rendered with EGL, it crashes with a segmentation fault on some
    driver stacks. The suite renders (baselines, probes) and trains in the same processes.
    """
    import torch._dynamo  # noqa: F401


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """End this worker soon after process ``parent`` is gone (killed, e.g. ``kill <pid>``): a pool
    worker outlives a killed parent and would go on training and writing into the run folder."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(threads: int | None, parent: int) -> None:
    """Worker process of a parallel suite: ends with the suite's process ``parent``, torch threads and
    plain log lines."""
    import torch

    _exit_with_parent(parent)
    _preload_compiler()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(processName)s][%(name)s] %(message)s")
    if threads:
        torch.set_num_threads(int(threads))


def _training_windows(suite: SuiteSettings, unit: Unit) -> int:
    """A unit's world-model training windows (steps x batch): its cost, for ordering the units."""
    train = suite.train_for(unit.env, unit.encoder)
    return int(train["steps"]) * int(train["batch_size"])


def _run_units(suite: SuiteSettings, units: list[Unit]) -> None:
    """Each unit in this process (``jobs: 1``) or ``jobs`` at a time in fresh processes."""
    if suite.jobs <= 1:
        for unit in units:
            _run_unit(suite, unit)
        return
    import concurrent.futures as cf
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked GL or OpenMP state
    with cf.ProcessPoolExecutor(suite.jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(suite.threads, os.getpid())) as pool:
        futures = [pool.submit(_run_unit, suite, unit) for unit in units]
        for f in cf.as_completed(futures):
            f.result()  # re-raise a worker's error (fail_fast) here


def run_suite(cfg) -> Path:
    """Run (or resume) the suite described by ``cfg`` (the composed ``configs/bench.yaml``).

    Datasets are collected first (``workers`` processes each); then the baselines of each env and
    every ``(env, encoder)`` unit (train encoder, train world model, probe, evaluate each planner; an
    encoder entry's ``envs:`` limits its units to those env entries) run ``jobs`` at a time in separate
    processes (``jobs: 1``: in this process), each with ``threads`` torch threads, the units with the
    most world-model training windows first.

    Args:
        cfg: the composed config (node or dict), or a :class:`SuiteSettings` built from it.

    Returns:
        the run folder's ``report.md``.

    Raises:
        ValueError: an ``env``/``encoder``/``planner`` selection outside the suite.
    """
    import torch

    suite = cfg if isinstance(cfg, SuiteSettings) else SuiteSettings.from_config(cfg)
    suite.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    log.info("suite %s in %s: envs %s, encoders %s, planners %s (device %s, %d job(s))", suite.name, suite.out,
             list(suite.envs), list(suite.encoders), list(suite.planners), suite.device, suite.jobs)
    if suite.threads:
        torch.set_num_threads(suite.threads)
    _preload_compiler()
    for env in suite.envs:
        ensure_dataset(suite, env)
    units = [Unit(env) for env in suite.envs]
    units += sorted((Unit(env, enc, tuple(suite.planners)) for env, enc in suite.units()),
                    key=lambda u: -_training_windows(suite, u))  # the longest first: no long unit left to the end
    _run_units(suite, units)
    return write_suite_report(suite, time.perf_counter() - t_start)
