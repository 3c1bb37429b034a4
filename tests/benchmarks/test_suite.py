"""The benchmark suite: resume skips finished cells, dinov2 without weights is a skipped row, report files."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from benchmarks import suite
from benchmarks.suite.report import COLUMNS
from benchmarks.suite.settings import EvalSettings


def _tiny_config(out, encoders=("vae", "dinov2")) -> dict:
    """One env (wall, 32 px), a few episodes and steps: the whole suite in seconds."""
    entries = {
        "vae": {"options": {"tokens": "vector", "dim": 4, "width": 4, "image_size": 32},
                "train": {"steps": 3, "batch_size": 8}},
        "dinov2": {"name": "dinov2", "options": {"image_size": 28, "tokens": "pooled",
                                                 "weights": str(out / "no_such_weights.pth")}},
    }
    bench = {
        "name": "tiny", "model": "tiny",
        "model_options": {"predictor": {"dim": 16, "mlp_dim": 16, "heads": 2, "depth": 1, "num_hist": 1}},
        "train_preset": "quick",
        "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "val_every": 3, "ckpt_every": 3,
                  "val_batches": 1, "eval_windows": 8, "eval_horizon": 2, "plot": False},
        "envs": {"wall": {"options": {"image_size": 32}, "data": {"episodes": 4, "steps": 8, "policy": "uniform"},
                          "probe": {"points": 5, "lines": [[[0.1, 0.45], [0.9, 0.45]]]}}},
        "encoders": {k: entries[k] for k in encoders},
        "planners": {"cem": {"horizon": 2, "samples": 6, "iterations": 1, "topk": 2}},
        "eval": {"episodes": 2, "steps": 3, "batch_envs": 2, "seed": 1_000_000, "videos": 1, "baseline_videos": 0},
        "baselines": ["random", "oracle"],
    }
    return OmegaConf.create({"bench": bench, "out": str(out), "seed": 0, "device": "cpu", "workers": 1,
                             "progress": False, "fail_fast": True,
                             "select": {"env": None, "encoder": None, "planner": None}})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = suite.run_suite(_tiny_config(out))
    return out, report


def test_report_files_hold_every_row_and_column(finished_run):
    out, report = finished_run
    assert report == out / "report.md" and report.exists()
    with open(out / "results.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    kinds = {(r["encoder"], r["planner"], r["policy"]) for r in rows}
    assert ("(random actions)", "-", "random") in kinds and ("(oracle)", "-", "oracle") in kinds
    vae = next(r for r in rows if r["encoder"] == "vae")
    assert vae["status"] == "ok" and vae["planner"] == "cem" and vae["episodes"] == "2"
    assert 0.0 <= float(vae["ci_low"]) <= float(vae["success_rate"]) <= float(vae["ci_high"]) <= 1.0
    assert float(vae["plan_time_ms"]) > 0 and float(vae["train_time_s"]) > 0
    assert int(vae["num_tokens"]) == 1 and int(vae["token_dim"]) == 4 and int(vae["predictor_params"]) > 0
    oracle = next(r for r in rows if r["policy"] == "oracle")
    assert float(oracle["success_rate"]) >= 0.0 and oracle["status"] == "ok"
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["suite"] == "tiny" and len(data["rows"]) == len(rows)
    assert set(data["monotonicity"]) == {"wall/vae"}
    text = report.read_text()
    assert "| wall | vae | cem |" in text and "(random actions)" in text and "(oracle)" in text
    assert (out / "success_vs_time.png").exists() and (out / "latent_vs_true_wall.png").exists()
    assert (out / "cells" / "wall__vae__cem" / "episode_000.gif").exists()


def test_dinov2_without_weights_is_a_skipped_row(finished_run):
    out, _ = finished_run
    cell = json.loads((out / "cells" / "wall__dinov2__cem.json").read_text())
    assert cell["status"] == suite.DINOV2_SKIP == "skipped: no DINOv2 weights (see README)"
    assert "success_rate" not in cell
    assert "skipped: no DINOv2 weights (see README)" in (out / "report.md").read_text()
    assert not list((out / "models").glob("wall__dinov2*"))  # nothing trained on an untrained DINOv2


def test_resumed_suite_skips_finished_cells(finished_run, monkeypatch):
    out, _ = finished_run
    import mpc.data
    import mpc.evaluation
    import mpc.training

    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    calls = []

    def forbidden(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called on a resumed suite")
        return fn

    monkeypatch.setattr(mpc.training, "train_encoder", forbidden("train_encoder"))
    monkeypatch.setattr(mpc.training, "train", forbidden("train"))
    monkeypatch.setattr(mpc.evaluation, "evaluate", forbidden("evaluate"))
    monkeypatch.setattr(mpc.data, "collect", forbidden("collect"))
    cfg = _tiny_config(out)
    cfg.select.encoder = "vae"  # the dinov2 row is re-checked (weights may have appeared), vae must not rerun
    suite.run_suite(cfg)
    assert calls == []
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert after == before  # no cell rewritten
    # the report's time is this invocation's, and says that the reused work is not in it
    text = (out / "report.md").read_text()
    assert "wall time of this invocation" in text and "were reused, not counted" in text


def test_a_cell_left_unfinished_is_run_again(finished_run, monkeypatch, caplog):
    out, _ = finished_run
    import mpc.training

    (out / "cells" / "wall__vae__cem.json").unlink()
    monkeypatch.setattr(mpc.training, "train_encoder", lambda *a, **k: pytest.fail("encoder retrained"))
    monkeypatch.setattr(mpc.training, "train", lambda *a, **k: pytest.fail("world model retrained"))
    cfg = _tiny_config(out)
    cfg.select.encoder = "vae"
    with caplog.at_level("INFO", logger="benchmarks.suite.cells"):
        suite.run_suite(cfg)  # trained models are reused, only the evaluation runs
    cell = json.loads((out / "cells" / "wall__vae__cem.json").read_text())
    assert cell["status"] == "ok" and cell["episodes"] == 2
    # the log says which cell finished and how it did, without progress bars
    assert [r.getMessage() for r in caplog.records if r.name == "benchmarks.suite.cells"] == [
        f"wall / vae / cem: success {cell['success_rate']:.2f} over 2 goals ({cell['eval_time_s']:.0f} s)"]


def test_other_goal_seeds_reevaluate_the_trained_models_without_training_again(finished_run, tmp_path, monkeypatch):
    import shutil

    import mpc.data
    import mpc.training

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    for module, name in ((mpc.data, "collect"), (mpc.training, "train_encoder"), (mpc.training, "train")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called for new goals"))
    cfg = _tiny_config(out, encoders=("vae",))
    cfg.bench.eval.seed = 2_000_000  # the README's `bench.eval.seed=...` override
    suite.run_suite(cfg)
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if r["status"] == "ok"]
    assert sorted(r["policy"] for r in rows) == ["oracle", "planner", "random"]  # (the copied dinov2 row: skipped)
    assert all(r["settings"]["eval"]["seed"] == 2_000_000 for r in rows)
    for name in ("wall__vae__cem", "wall__random__none", "wall__oracle__none"):
        cell = json.loads((out / "cells" / f"{name}.json").read_text())
        assert cell["settings"]["eval"]["seed"] == 2_000_000 and cell["status"] == "ok"


def test_an_entrys_planner_options_change_its_cells_search_and_nothing_else(finished_run, tmp_path, monkeypatch):
    import shutil

    import mpc.training

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    first = json.loads((out / "cells" / "wall__vae__cem.json").read_text())
    baselines = {n: (out / "cells" / f"wall__{n}__none.json").stat().st_mtime_ns for n in ("random", "oracle")}
    for name in ("train_encoder", "train"):
        monkeypatch.setattr(mpc.training, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called for a new search"))
    cfg = _tiny_config(out, encoders=("vae",))
    cfg.bench.envs.wall.eval = {"planner_options": {"samples": 4, "iterations": 2, "topk": 2}}
    s = suite.SuiteSettings.from_config(cfg)
    merged = s.planner_options("wall", "cem")
    assert merged == {**s.planners["cem"].options, "samples": 4, "iterations": 2, "topk": 2}
    assert s.planners["cem"].options["samples"] == 6  # the planner entry itself is unchanged
    suite.run_suite(cfg)
    cell = json.loads((out / "cells" / "wall__vae__cem.json").read_text())
    assert first["rollouts_per_plan"] == 6 and cell["rollouts_per_plan"] == 8  # 4 samples x 2 iterations
    assert cell["settings"]["eval"]["planner_options"]["samples"] == 4
    assert "planner_options" not in first["settings"]["eval"]  # rows of entries without it are reused
    assert {n: (out / "cells" / f"wall__{n}__none.json").stat().st_mtime_ns for n in baselines} == baselines
    cfg.bench.envs.wall.eval = {"planner_options": [128]}
    with pytest.raises(ValueError, match="eval.planner_options must be a mapping"):
        suite.SuiteSettings.from_config(cfg)


def test_command_line_shorthands():
    assert suite.translate_argv(["suite=quick", "encoder=vae,jepa", "planner=cem", "env=wall", "out=x",
                                 "bench.eval.episodes=3"]) == [
        "bench=quick", "select.encoder='vae,jepa'", "select.planner=cem", "select.env=wall", "out=x",
        "bench.eval.episodes=3"]
    # under -m a comma list sweeps (one job each), as hydra does
    assert suite.translate_argv(["-m", "encoder=vae,jepa"]) == ["-m", "select.encoder=vae,jepa"]


def test_comma_lists_as_configs_bench_yaml_documents_them(tmp_path):
    # `wmpc bench env=pointmass,wall` (no -m) is one run over both envs, not a hydra quoting error
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "bench", "suite=quick", "env=pointmass,wall",
                        "encoder=vae,jepa", f"out={tmp_path}", "--cfg", "job"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "env: pointmass,wall" in r.stdout and "encoder: vae,jepa" in r.stdout


def test_selection_rejects_names_outside_the_suite(tmp_path):
    cfg = _tiny_config(tmp_path)
    cfg.select.encoder = "vea"
    with pytest.raises(ValueError, match="vea.*not part of this suite.*vae"):
        suite.run_suite(cfg)


def test_monotonicity_of_known_curves():
    t = np.linspace(0.0, 1.0, 50)
    up = suite.monotonicity(t, t ** 2)
    assert up["spearman"] == pytest.approx(1.0) and up["rising_fraction"] == 1.0
    down = suite.monotonicity(t, 1.0 - t)
    assert down["spearman"] == pytest.approx(-1.0) and down["rising_fraction"] == 0.0
    flat = suite.monotonicity(t, np.minimum(t, 0.25))  # saturates after a quarter of the range
    assert flat["rising_fraction"] < 0.5


def test_latent_probe_of_a_position_encoder_is_monotone():
    class PositionEncoder:
        """Tokens = the agent's pixel centroid (red pixels of the wall env)."""

        def encode(self, images):
            import torch
            im = np.asarray(images).astype(float)
            red = (im[..., 0] > 150) & (im[..., 1] < 100)
            ys, xs = np.mgrid[: im.shape[1], : im.shape[2]]
            c = np.stack([(red * xs).sum((1, 2)) / red.sum((1, 2)), (red * ys).sum((1, 2)) / red.sum((1, 2))], -1)
            return torch.as_tensor(c, dtype=torch.float32)[:, None, :]

    probe = suite.latent_probe("wall", {"image_size": 32}, PositionEncoder(),
                               [[[0.1, 0.45], [0.9, 0.45]], [[0.25, 0.1], [0.25, 0.9]]], points=9)
    assert len(probe["true"]) == len(probe["latent"]) == 2 * 3 * 9
    assert probe["spearman"] > 0.95 and probe["rising_fraction"] == 1.0


def test_bench_command_sweeps_cells_into_one_run_folder(tmp_path):
    tiny = ["bench.envs.wall.data.episodes=4", "bench.envs.wall.data.steps=10", "bench.envs.wall.options.image_size=32",
            "bench.train.steps=2", "bench.train.batch_size=8", "bench.train.val_every=2", "bench.train.ckpt_every=2",
            "bench.train.eval_windows=4", "bench.encoders.vae.train.steps=2", "bench.encoders.jepa.train.steps=2",
            "bench.encoders.vae.options.width=4", "bench.encoders.jepa.options.width=4",
            "bench.planners.cem.samples=4", "bench.planners.cem.iterations=1", "bench.eval.episodes=1",
            "bench.eval.steps=2", "bench.eval.batch_envs=1", "bench.eval.videos=0", "bench.baselines=[random]",
            "jobs=1", "workers=1", "device=cpu"]
    rc = suite.bench_command(["-m", "suite=quick", "env=wall", "encoder=vae,jepa", "planner=cem",
                              f"out={tmp_path}", *tiny])
    assert rc == 0
    cells = sorted(p.name for p in (tmp_path / "cells").glob("*.json"))
    assert cells == ["wall__jepa__cem.json", "wall__random__none.json", "wall__vae__cem.json"]
    assert (tmp_path / "jobs" / "0").is_dir() and (tmp_path / "jobs" / "1").is_dir()
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["encoder"] for r in rows} == {"vae", "jepa", "(random actions)"}


def test_a_users_gym_env_runs_in_the_suite(tmp_path):
    # an env the suite does not list (a gymnasium id): it borrows the first env's settings
    cfg = _tiny_config(tmp_path / "run", encoders=("vae",))
    cfg.select.env = "tests.mpc.contract_env:Beacon-v0"
    report = suite.run_suite(cfg)
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    mine = [r for r in rows if r["env"] == "tests.mpc.contract_env:Beacon-v0"]
    assert report.exists() and mine
    assert any(r["encoder"] == "vae" and r.get("status", "ok") == "ok" for r in mine), mine


def _compose_bench(suite_name: str, out, overrides=()):
    """``configs/bench.yaml`` with ``bench=<suite_name>`` composed as ``wmpc bench`` does."""
    from hydra import compose, initialize_config_dir

    from mpc._config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("bench", overrides=[f"bench={suite_name}", f"out={out}", *overrides])


def test_standard_config_composes(tmp_path):
    from mpc.data.exploration import check_policy

    s = suite.SuiteSettings.from_config(_compose_bench("standard", tmp_path))
    assert s.name == "standard" and s.env_order == ["pointmass", "wall", "reacher", "reacher_proprio", "pointmaze",
                                                    "pointmaze_medium", "pusht", "pusht_dino_wm"]
    est = s.envs["reacher_proprio"]  # reacher planned with the goal's proprio read from the goal image
    assert est.env == "reacher" and est.data_name == "reacher" and est.options == s.envs["reacher"].options
    assert est.eval.estimates_goal_proprio and est.eval.alpha > 0 and est.eval.estimator["steps"] > 0
    assert {n for n, e in s.envs.items() if e.eval.estimates_goal_proprio} == {"reacher_proprio", "pusht_dino_wm"}
    assert s.envs["pusht_dino_wm"].eval.proprio_weights == [1, 1, 0, 0]  # the pusher's position, not its velocity
    # Push-T plans in 0.4 of the action box, 3 model steps ahead with every planner; the other entries (and
    # every baseline row) keep the whole box and each planner's horizon, and their cell records do not name
    # them, so rows written before these settings existed are reused
    dwm_eval = s.cell_settings("pusht_dino_wm", "jepa", "cem")["eval"]
    assert dwm_eval["action_bound"] == 0.4 and dwm_eval["horizon"] == 3
    # ... and searches 100 x 9 there (cem and icem); the planner entries keep 64 x 4
    for p in ("cem", "icem"):
        assert s.planner_options("pusht_dino_wm", p)["samples"] == 100 and s.planners[p].options["samples"] == 64
        assert s.planner_options("pusht_dino_wm", p)["iterations"] == 9 and s.planners[p].options["iterations"] == 4
        # no entry searches more than 1/10 of DINO-WM's CEM 300 x 30 (9,000 rollouts per replan)
        assert all(s.planner_options(e, p)["samples"] * s.planner_options(e, p)["iterations"] <= 900
                   for e in s.env_order)
        assert all(s.planner_options(e, p) == s.planners[p].options for e in s.env_order if e != "pusht_dino_wm")
    assert all("planner_options" not in s.cell_settings(e, "jepa", "cem")["eval"]
               for e in s.env_order if e != "pusht_dino_wm")
    budget = suite.SuiteSettings.from_config(_compose_bench("budget", tmp_path))  # every budget as its entry says
    assert all(budget.planner_options("pusht_dino_wm", p) == budget.planners[p].options for p in budget.planners)
    assert not {"action_bound", "horizon"} & set(s.cell_settings("pusht_dino_wm", None, None)["eval"])
    assert all(s.envs[e].eval.action_bound == 1.0 and s.envs[e].eval.horizon is None
               and not {"action_bound", "horizon"} & set(s.cell_settings(e, "jepa", "cem")["eval"])
               for e in s.env_order if e != "pusht_dino_wm")
    for bad in ({"horizon": 0}, {"horizon": 2.5}, {"action_bound": 0.0}, {"action_bound": 1.5}):
        with pytest.raises(ValueError, match=f"eval.{next(iter(bad))}"):
            EvalSettings(episodes=1, steps=1, batch_envs=1, seed=0, **bad)
    assert "goal_proprio" in s.cell_settings("reacher_proprio", "jepa", "cem")["eval"]
    # settings at no effect stay out of a cell's record, so rows written before they existed are reused
    assert "goal_proprio" not in s.cell_settings("reacher", "jepa", "cem")["eval"]
    assert "goal_proprio" not in s.cell_settings("reacher_proprio", None, None)["eval"]
    dwm = s.envs["pusht_dino_wm"]  # DINO-WM's Push-T protocol: start and goal 25 control steps apart on one push
    assert dwm.env == "pusht" and dwm.options["start"] == "pushing" and dwm.options["goal_steps"] == 5
    # the pusht exploration, 8x as many episodes: on 1,200 the transporter's world model overfits
    assert dwm.data.policy == s.envs["pusht"].data.policy == "push" and dwm.data.episodes == 2400
    # contact dynamics get their own, longer world-model schedule; the rest of the suite's schedule holds
    assert s.train_for("pusht_dino_wm")["steps"] > s.train_for("pusht")["steps"] == s.train["steps"]
    assert s.train_for("pusht_dino_wm")["batch_size"] == s.train["batch_size"]
    assert s.envs["wall"].options["action_repeat"] == 5 and s.envs["reacher"].options["action_repeat"] == 2
    # the mazes plan with the steps to the goal learnt from their data; no other entry does
    assert {n for n, e in s.envs.items() if e.eval.distance is not None} == {"pointmaze", "pointmaze_medium"}
    assert s.cell_settings("pointmaze", "jepa", "cem")["eval"]["distance"]["steps"] > 0
    assert "distance" not in s.cell_settings("pointmaze", None, None)["eval"]  # baselines plan nothing
    assert "distance" not in s.cell_settings("wall", "jepa", "cem")["eval"]  # rows written before stay valid
    assert set(s.encoders) == {"vae", "diffusion", "jepa", "transporter", "dinov2"} and list(s.planners) == ["cem", "icem"]
    # the pixel-only transporter keypoints run on DINO-WM's Push-T alone, with an MLP world model on batches of
    # 256 windows; the other backends run on every entry with the suite's world model and batches of 64
    units = s.units()
    assert [env for env, enc in units if enc == "transporter"] == ["pusht_dino_wm"]
    assert all(sum(enc == e for _, enc in units) == len(s.envs) for e in ("vae", "diffusion", "jepa", "dinov2"))
    assert s.train_for("pusht_dino_wm", "transporter")["batch_size"] == 256
    assert s.train_for("pusht_dino_wm", "transporter")["steps"] == s.train_for("pusht_dino_wm", "jepa")["steps"]
    assert s.train_for("pusht_dino_wm", "jepa")["batch_size"] == s.train["batch_size"] == 64
    assert s.model_config("pusht_dino_wm", "transporter")["predictor"]["kind"] == "mlp"
    assert s.model_config("pusht_dino_wm", "jepa")["predictor"]["kind"] == "transformer"
    medium = s.envs["pointmaze_medium"]
    assert medium.env == "pointmaze" and medium.options["maze"] == "medium" and s.envs["pointmaze"].options["maze"] == "umaze"
    assert s.envs["pusht"].data.policy == "push" and s.envs["pusht"].data.policy_options == {"mix": 0.2}
    for es in s.envs.values():
        check_policy(es.data.policy)
        assert es.eval.episodes == 50 and es.probe is not None
    assert s.baselines == ["random", "oracle"] and s.jobs == 2
    quick = suite.SuiteSettings.from_config(_compose_bench("quick", tmp_path))
    assert quick.env_order == ["pointmass", "wall", "reacher"] and quick.envs["reacher"].data.policy == "waypoints"


def test_an_encoder_entry_runs_on_its_envs_with_its_own_world_model_schedule(tmp_path, monkeypatch):
    cfg = OmegaConf.to_container(_tiny_config(tmp_path, encoders=("vae",)))
    bench = cfg["bench"]
    bench["envs"]["pointmass"] = {"options": {"image_size": 32}, "data": {"episodes": 4, "steps": 8, "policy": "uniform"}}
    bench["envs"]["wall"]["train"] = {"steps": 5}
    bench["encoders"]["kp"] = {"name": "vae", "options": bench["encoders"]["vae"]["options"], "envs": ["pointmass"],
                               "model": {"predictor": {"mlp_dim": 32}}, "model_train": {"steps": 9, "batch_size": 16}}
    s = suite.SuiteSettings.from_config(cfg)
    assert s.units() == [("wall", "vae"), ("pointmass", "vae"), ("pointmass", "kp")]
    # the encoder entry's schedule goes over the suite's and the env entry's, for its own units only
    assert s.train_for("pointmass", "kp")["steps"] == 9 and s.train_for("pointmass", "kp")["batch_size"] == 16
    assert s.train_for("pointmass", "vae")["batch_size"] == 8 and s.train_for("wall", "vae")["steps"] == 5
    assert s.cell_settings("pointmass", "kp", "cem")["train"]["batch_size"] == 16
    assert s.model_config("pointmass", "kp")["predictor"]["mlp_dim"] == 32
    assert s.model_config("pointmass", "vae")["predictor"]["mlp_dim"] == 16
    # the scheduler starts the units that train longest first (baselines stay in front)
    seen = []
    monkeypatch.setattr(suite.runner, "ensure_dataset", lambda *a: None)
    monkeypatch.setattr(suite.runner, "_run_units", lambda st, units: seen.extend(units))
    monkeypatch.setattr(suite.runner, "write_suite_report", lambda *a: None)
    suite.run_suite(cfg)
    assert [(u.env, u.encoder) for u in seen] == [("wall", None), ("pointmass", None), ("pointmass", "kp"),
                                                 ("wall", "vae"), ("pointmass", "vae")]
    for key, value, match in (("envs", ["maze"], "encoders.kp.envs names maze"),
                              ("model_options", {}, "encoders.kp: unknown key.*model_options")):
        bad = json.loads(json.dumps(cfg))
        bad["bench"]["encoders"]["kp"][key] = value
        with pytest.raises(ValueError, match=match):
            suite.SuiteSettings.from_config(bad)


def test_a_tiny_standard_suite_runs_and_resumes(tmp_path, monkeypatch):
    """The standard suite cut down to Push-T (push data, Push-T probe parts), vae, cem and icem, in seconds."""
    tiny = ["select.env=pusht", "select.encoder=vae", "bench.envs.pusht.options.image_size=32",
            "bench.envs.pusht.data.episodes=3", "bench.envs.pusht.data.steps=8", "bench.envs.pusht.probe.points=5",
            "bench.encoders.vae.options.width=4", "bench.encoders.vae.train.steps=2", "bench.encoders.vae.train.batch_size=8",
            "bench.model_options.predictor.dim=16", "bench.model_options.predictor.mlp_dim=16",
            "bench.train.steps=2", "bench.train.batch_size=8", "bench.train.val_every=2", "bench.train.ckpt_every=2",
            "bench.train.warmup_steps=1", "bench.train.eval_windows=4",
            "bench.planners.cem.samples=4", "bench.planners.cem.iterations=1", "bench.planners.cem.elites=2",
            "bench.planners.icem.samples=4", "bench.planners.icem.iterations=1", "bench.planners.icem.elites=2",
            "bench.eval.episodes=1", "bench.eval.steps=2", "bench.eval.batch_envs=1", "bench.eval.videos=0",
            "jobs=1", "workers=1", "device=cpu"]
    cfg = _compose_bench("standard", tmp_path, tiny)
    suite.run_suite(cfg)
    cells = sorted(p.name for p in (tmp_path / "cells").glob("*.json"))
    assert cells == ["pusht__oracle__none.json", "pusht__random__none.json", "pusht__vae__cem.json",
                     "pusht__vae__icem.json"]
    meta = json.loads((tmp_path / "data" / "pusht" / "dataset.json").read_text())
    assert meta["policy"] == "push" and meta["policy_options"] == {"mix": 0.2}
    assert "object_moving_fraction" in json.loads((tmp_path / "data" / "pusht" / "stats.json").read_text())["coverage"]
    probe = json.loads((tmp_path / "probes" / "pusht__vae.json").read_text())
    assert set(probe["parts"]) == {"block_position", "block_angle", "agent"}
    text = (tmp_path / "report.md").read_text()
    why = text.split("## Why each result")[1]
    vae_row = next(line for line in why.splitlines() if line.startswith("| pusht | vae |"))
    parts = probe["parts"]
    assert " / ".join(f"{parts[k]['spearman']:.2f}" for k in ("block_position", "block_angle", "agent")) in vae_row
    metrics = json.loads(next((tmp_path / "models").glob("pusht__vae-*/eval_metrics.json")).read_text())
    ratio = metrics["ratio"]
    assert f"{ratio[0]:.2f} / {ratio[-1]:.2f}" in vae_row
    assert 0 <= metrics["object_moving_windows"] <= metrics["windows"]  # Push-T: the block-moving split
    assert ("where the object moves" in vae_row) == ("ratio_object_moving" in metrics)
    assert ("block pose at step" in vae_row) == bool(metrics.get("object_readout"))
    assert "block moves in" in why

    import mpc.data
    import mpc.evaluation
    import mpc.training

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    for module, name in ((mpc.training, "train_encoder"), (mpc.training, "train"), (mpc.evaluation, "evaluate"),
                         (mpc.data, "collect")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called on a resumed suite"))
    suite.run_suite(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")} == before
    monkeypatch.undo()

    # a changed planner entry re-runs its cells and only those; the rows record what they ran under
    suite.run_suite(_compose_bench("standard", tmp_path, tiny + ["bench.planners.cem.samples=5"]))
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert after["pusht__vae__cem.json"] != before["pusht__vae__cem.json"]
    assert {k: v for k, v in after.items() if k != "pusht__vae__cem.json"} == \
        {k: v for k, v in before.items() if k != "pusht__vae__cem.json"}
    cem = json.loads((tmp_path / "cells" / "pusht__vae__cem.json").read_text())
    assert cem["settings"]["planner"]["options"]["samples"] == 5 and cem["settings"]["options"]["image_size"] == 32
    # a copied run folder (here: elsewhere, named by an absolute path) keeps its trained artifacts: a changed
    # planner re-evaluates without training anything again
    import shutil

    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(tmp_path, moved)
    for module, name in ((mpc.training, "train_encoder"), (mpc.training, "train"), (mpc.data, "collect")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called in a moved run"))
    suite.run_suite(_compose_bench("standard", moved.resolve(), tiny + ["bench.planners.cem.samples=6"]))
    assert json.loads((moved / "cells" / "pusht__vae__cem.json").read_text())["settings"]["planner"]["options"][
        "samples"] == 6
    monkeypatch.undo()
    # planning toward the goal's proprio read from the goal image: one estimator for the dataset, only the
    # planner cells run again, and the rows and the report say where the goal's proprio came from
    from_image = tiny + ["bench.eval.alpha=1.0", "bench.eval.goal_proprio=image",
                         "bench.eval.estimator.steps=2", "+bench.eval.estimator.batch_size=8",
                         "bench.eval.estimator.width=4", "+bench.eval.estimator.num_keypoints=4",
                         "+bench.eval.estimator.hidden=8", "+bench.eval.action_bound=0.5", "+bench.eval.horizon=2"]
    suite.run_suite(_compose_bench("standard", tmp_path, from_image))
    assert len(list((tmp_path / "estimators").glob("pusht-*/estimator.safetensors"))) == 1
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert again["pusht__vae__icem.json"] != after["pusht__vae__icem.json"]
    # (and in half the action box: the bound reaches the planner and the row says so)
    assert json.loads((tmp_path / "cells" / "pusht__vae__cem.json").read_text())["labels"] == \
        "proprio-from-goal-image,action-bound=0.5"
    assert json.loads((tmp_path / "cells" / "pusht__vae__icem.json").read_text())["horizon"] == 2  # the entry's
    assert "Proprio read from the goal image" in (tmp_path / "report.md").read_text()
    # data collected under other env options: a clear error, nothing deleted
    with pytest.raises(ValueError, match=r"action_scale: 50.0 there, 40.0 here.*new folder"):
        suite.run_suite(_compose_bench("standard", tmp_path, tiny + ["+bench.envs.pusht.options.action_scale=40.0"]))
    assert (tmp_path / "data" / "pusht" / "dataset.json").exists()

    from benchmarks.residual import compare

    res = compare(tmp_path, ["pusht"], tmp_path / "residual", encoder="vae", overrides=tuple(tiny))
    assert set(res["pusht"]) == {"plain", "residual"} and (tmp_path / "residual" / "residual.md").exists()
    assert all(len(r["ratio"]) >= 1 and all(x > 0 for x in r["ratio"]) for r in res["pusht"].values())
    from mpc.world_model import WorldModel
    assert WorldModel.read_header(tmp_path / "residual" / "pusht-residual" / "checkpoints" / "model_latest.safetensors"
                                  )["config"]["predictor"]["residual"] is True


def test_artifacts_named_the_earlier_way_are_still_found(tmp_path):
    """Folders named from the data path as typed (before digests took paths relative to the run folder)
    are reused while finished; otherwise the new name is used."""
    from benchmarks.suite.artifacts import _artifact_folder, _spellings, digest

    data = tmp_path / "run" / "data" / "pointmass"
    settings = {"name": "vae"}
    earlier = [{"data": d, **settings} for d in _spellings(data)]
    new = tmp_path / "encoders" / f"pm__vae-{digest({'data': 'data/pointmass', **settings})}"
    old = tmp_path / "encoders" / f"pm__vae-{digest({'data': str(data.resolve()), **settings})}"
    assert _artifact_folder(tmp_path / "encoders", "pm__vae", {"data": "data/pointmass", **settings}, earlier) == new
    old.mkdir(parents=True)
    assert _artifact_folder(tmp_path / "encoders", "pm__vae", {"data": "data/pointmass", **settings}, earlier) == new
    (old / "train_time.json").write_text('{"seconds": 1.0}')  # finished
    assert _artifact_folder(tmp_path / "encoders", "pm__vae", {"data": "data/pointmass", **settings}, earlier) == old


def test_a_tiny_maze_suite_trains_its_temporal_distance_once(tmp_path, monkeypatch):
    """The standard suite's U-maze entry cut down: its cells plan with a temporal distance trained on the
    entry's data for the encoder, labelled as such; a resumed run trains nothing again."""
    tiny = ["select.env=pointmaze", "select.encoder=vae", "select.planner=cem",
            "bench.envs.pointmaze.options.image_size=32",
            "bench.envs.pointmaze.data.episodes=4", "bench.envs.pointmaze.data.steps=8",
            "bench.envs.pointmaze.probe.points=4", "bench.envs.pointmaze.eval.distance.steps=5",
            "bench.encoders.vae.options.width=4", "bench.encoders.vae.train.steps=2",
            "bench.encoders.vae.train.batch_size=8", "bench.model_options.predictor.dim=16",
            "bench.model_options.predictor.mlp_dim=16", "bench.train.steps=2", "bench.train.batch_size=8",
            "bench.train.val_every=2", "bench.train.ckpt_every=2", "bench.train.warmup_steps=1",
            "bench.train.eval_windows=4", "bench.planners.cem.samples=4", "bench.planners.cem.iterations=1",
            "bench.planners.cem.elites=2", "bench.eval.episodes=1", "bench.eval.steps=2", "bench.eval.batch_envs=1",
            "bench.eval.videos=0", "bench.baselines=[]", "jobs=1", "workers=1", "device=cpu"]
    cfg = _compose_bench("standard", tmp_path, tiny)
    suite.run_suite(cfg)
    (folder,) = (p for p in (tmp_path / "distances").glob("pointmaze__vae-*") if p.is_dir())
    m = json.loads((folder / "distance.json").read_text())
    assert m["steps"] == 5 and (folder / "distance.safetensors").exists()
    cell = json.loads((tmp_path / "cells" / "pointmaze__vae__cem.json").read_text())
    assert cell["status"] == "ok" and cell["labels"] == "temporal-distance"
    assert cell["settings"]["eval"]["distance"] == {"steps": 5}
    text = (tmp_path / "report.md").read_text()
    assert "Learnt steps to the goal" in text
    learnt = json.loads((tmp_path / "probes" / "pointmaze__vae.distance.json").read_text())
    plain = json.loads((tmp_path / "probes" / "pointmaze__vae.json").read_text())
    assert learnt["true"] == plain["true"] and learnt["latent"] != plain["latent"]  # same pairs, the learnt metric
    why = text.split("## Why each result")[1].splitlines()
    row = next(line for line in why if line.startswith("| pointmaze | vae |"))
    assert f"learnt distance {learnt['spearman']:.2f}" in row

    import mpc.temporal_distance

    monkeypatch.setattr(mpc.temporal_distance, "train_temporal_distance",
                        lambda *a, **k: pytest.fail("train_temporal_distance called on a resumed suite"))
    before = (tmp_path / "cells" / "pointmaze__vae__cem.json").stat().st_mtime_ns
    suite.run_suite(cfg)
    assert (tmp_path / "cells" / "pointmaze__vae__cem.json").stat().st_mtime_ns == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the child's state from /proc")
def test_a_pool_worker_ends_when_the_suite_process_is_killed(tmp_path):
    """A killed suite (``kill -9 <pid>``) leaves no worker training on into its run folder."""
    import os
    import signal
    import time

    (tmp_path / "watched_child.py").write_text(
        "import os, sys, time\n"
        "from benchmarks.suite.runner import _exit_with_parent\n"
        "def main(parent, ready):\n"
        "    _exit_with_parent(parent, every=0.1)\n"
        "    open(ready, 'w').close()\n"
        "    time.sleep(120)\n")
    parent_code = (
        "import multiprocessing, os, sys, time\n"
        "import watched_child\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('spawn').Process(target=watched_child.main,\n"
        "                                                     args=(os.getpid(), sys.argv[1]))\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    ready = tmp_path / "ready"

    def running(pid: int) -> bool:  # a zombie (ended, not yet reaped by init) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(ready)], stdout=subprocess.PIPE,
                              text=True, env=env)
    child = None
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:  # the child imported the runner
            time.sleep(0.1)
        assert ready.exists() and running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child), "the worker outlived its killed parent by 30 s"
    finally:
        parent.kill()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)
