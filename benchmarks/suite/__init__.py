"""The goal-reaching benchmark suite (envs x encoders x planners -> one report).

``wmpc bench suite=quick`` (2 CPU cores, minutes) and ``wmpc bench suite=dino_wm`` (the DINO-WM
protocol, for a GPU) run, for every env of the suite:

1. collect goal-free random exploration data (:func:`mpc.data.collect`, seeds ``0 ..``);
2. for every encoder: train it if it is trainable (:func:`mpc.training.train_encoder`), or use
   its pretrained weights (a ``dinov2`` row without weights says ``skipped: no DINOv2 weights``,
   it never runs an untrained DINOv2), then train a world model on its cached latents
   (:func:`mpc.training.train`);
3. for every planner: closed-loop goal reaching on held-out evaluation goals
   (:func:`mpc.evaluation.evaluate`, seeds from ``eval.seed`` = 1,000,000 on, far from collection);
4. random-action and oracle baselines, and a probe of latent distance to the goal against true
   distance along straight lines through the arena (Spearman rank correlation per backend);
5. ``report.md``, ``results.csv``, ``results.json``, plots and GIFs in the run folder.

Run folder (``out``, default ``runs/bench/<suite>``)::

    data/<env>/                         datasets (mpc.data layout)
    encoders/<env>__<encoder>-<digest>/ encoder.safetensors + train_time.json (trainable backends)
    models/<env>__<encoder>-<digest>/   world-model training run (mpc.training layout) + train_time.json
    cells/<env>__<encoder>__<planner>.json   one result per cell, written atomically (@<shift> before
                                        .json: the cell under a distribution shift)
    cells/<env>__<encoder>__<planner>/  evaluation outputs (results.json, episode GIFs)
    probes/<env>__<encoder>.json        latent-vs-true distance probe (.ensemble.json: an ensemble's
                                        disagreement next to its cost spread)
    report.md, results.csv, results.json, success_vs_time.png, latent_vs_true_<env>.png

Resuming: every stage reuses what a previous invocation with the same out folder finished (a cell
whose json says ``status: ok`` is never re-run; datasets, encoders and models are reused; digests
of their settings are part of the folder names, so changed settings train new ones). Interrupting
a suite therefore loses at most the stage in progress. Concurrent jobs of a hydra multirun
(``-m encoder=vae,jepa planner=cem,gd`` with a parallel launcher) share the folder and take a file
lock around each stage, so two jobs never train the same model twice.

Extra axes a suite config may set: ``shifts: held_out`` / ``custom_shifts`` (evaluate every cell again
under distribution shifts of the env's factors of variation: ``suite=generalization``), a planner
entry's ``risk:`` / ``risk_mode:`` (risk-aware objectives for ensemble models: ``suite=risk``) and
``reference_planner:`` (the planning-budget comparison: ``suite=budget``), and an encoder entry's
``envs:`` (the env entries it runs on; default every one), ``model:`` and ``model_train:`` (its world
models' preset and schedule changes, over the suite's and the env entry's).

``env=``, ``encoder=`` and ``planner=`` on the command line restrict the suite to those cells
(comma lists sweep with ``-m``); ``suite=<name>`` picks ``configs/bench/<name>.yaml``.

Modules: ``settings`` (the typed suite config), ``artifacts`` (datasets, encoders, world models and
folder names), ``probe`` (latent vs true distance, ensemble disagreement), ``cells`` (one result row),
``runner`` (the scheduler), ``report`` (report.md, results and plots) with ``explain`` (why each
result), ``budget`` (planning budget) and ``generalization`` (shifts), ``command`` (``wmpc bench``).
"""
from __future__ import annotations

from benchmarks.suite.cells import CELL_FORMAT, DINOV2_SKIP
from benchmarks.suite.command import bench_command, main, translate_argv
from benchmarks.suite.probe import latent_probe, monotonicity
from benchmarks.suite.runner import run_suite
from benchmarks.suite.settings import SuiteSettings

__all__ = ["bench_command", "main", "run_suite", "latent_probe", "monotonicity", "translate_argv",
           "SuiteSettings", "DINOV2_SKIP", "CELL_FORMAT"]
