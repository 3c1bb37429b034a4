"""The suite's training-budget axis: env entries of one task that differ in data or training steps."""
from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import suite
from benchmarks.suite.training_budget import budget_studies, training_budget_tables

from tests.benchmarks.test_suite import _compose_bench
from tests.benchmarks.test_suite_axes import _TINY_TRAIN


def test_pusht_budget_config_composes_with_shared_data_and_growing_schedules(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("pusht_budget", tmp_path))
    assert s.budget_target == 0.6 and set(s.encoders) == {"jepa"}
    assert {es.env for es in s.envs.values()} == {"pusht"}
    steps = {n: s.train_for(n)["steps"] for n in s.envs}
    assert steps["pusht_d300_s1500"] == 1500 and steps["pusht_d4800_s96000"] == 96000
    assert s.envs["pusht_d300_s6000"].data_name == "pusht_d300_s1500"  # data collected once per size
    assert s.envs["pusht_d1200_s6000"].data_name == "pusht_d1200_s6000"
    assert s.model_config("pusht_d4800_s24000_w128", "jepa")["predictor"]["dim"] == 128
    assert s.model_config("pusht_d4800_s24000", "jepa")["predictor"]["dim"] == 64
    assert s.train_for("pusht_d300_s6000")["batch_size"] == 64  # the rest of the suite's schedule stays


def test_pusht_budget_also_studies_dino_wm_goals_with_the_pusher_read_from_the_goal_image(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("pusht_budget", tmp_path))
    std = suite.SuiteSettings.from_config(_compose_bench("standard", tmp_path))
    dwm = {n: es for n, es in s.envs.items() if n.startswith("pusht_dino_wm_")}
    assert len(dwm) == 3
    for name, es in dwm.items():  # the standard suite's pusht_dino_wm entry at other budgets
        # the standard entry's evaluation, at the suite's 64 x 4 search (the standard entry's before its 128 x 8)
        assert es.eval.planner_options is None
        assert es.options == std.envs["pusht_dino_wm"].options
        assert es.eval == dataclasses.replace(std.envs["pusht_dino_wm"].eval, planner_options=None)
        assert es.eval.estimates_goal_proprio and es.eval.proprio_weights == [1, 1, 0, 0]
        assert s.cell_settings(name, "jepa", "cem")["eval"]["estimator"] == {"steps": 3000, "width": 32}
    std_data = std.envs["pusht_dino_wm"].data  # the standard entry's exploration, at 1,200 episodes
    assert s.envs["pusht_dino_wm_d1200_s24000"].data == dataclasses.replace(std_data, episodes=1200)
    assert s.train_for("pusht_dino_wm_d1200_s24000")["steps"] == std.train_for("pusht_dino_wm")["steps"]
    assert s.train_for("pusht_dino_wm_d4800_s96000")["steps"] == 96000
    assert s.envs["pusht_dino_wm_d4800_s96000"].data_name == "pusht_dino_wm_d4800_s24000"  # one 4,800 dataset
    # the image-only entries keep their cells: no goal proprio, no estimator in their settings
    assert not s.envs["pusht_d300_s1500"].eval.estimates_goal_proprio
    assert "estimator" not in s.cell_settings("pusht_d300_s1500", "jepa", "cem")["eval"]


def test_reusing_data_of_an_entry_with_other_data_settings_is_refused(tmp_path):
    cfg = _compose_bench("pusht_budget", tmp_path, ["bench.envs.pusht_d300_s6000.data.episodes=301"])
    with pytest.raises(ValueError, match="data_from='pusht_d300_s1500'.*data differ"):
        suite.SuiteSettings.from_config(cfg)
    cfg = _compose_bench("pusht_budget", tmp_path, ["bench.envs.pusht_d300_s6000.data_from=nowhere"])
    with pytest.raises(ValueError, match="no env entry of this suite"):
        suite.SuiteSettings.from_config(cfg)


def test_a_tiny_training_budget_study_shares_data_trains_each_schedule_and_reports_it(tmp_path):
    small = "{episodes: 3, steps: 8, policy: push, seed: 0, policy_options: {mix: 0.2}}"
    tiny = ["select.env=[pusht_d300_s1500,pusht_d300_s6000]", "select.planner=cem",
            f"bench.envs.pusht_d300_s1500.data={small}", f"bench.envs.pusht_d300_s6000.data={small}",
            "bench.envs.pusht_d300_s1500.options.image_size=32", "bench.envs.pusht_d300_s6000.options.image_size=32",
            "bench.envs.pusht_d300_s1500.probe.points=5", "bench.envs.pusht_d300_s6000.probe.points=5",
            "bench.envs.pusht_d300_s1500.train.steps=2", "bench.envs.pusht_d300_s6000.train.steps=4",
            "bench.encoders.jepa.options.width=4", "bench.encoders.jepa.train.steps=2",
            "bench.encoders.jepa.train.batch_size=8", "bench.planners.cem.samples=4",
            "bench.planners.cem.iterations=1", "bench.planners.cem.elites=2", "bench.budget_target=0.5",
            *[o for o in _TINY_TRAIN if not o.startswith("bench.train.steps")]]
    report = suite.run_suite(_compose_bench("pusht_budget", tmp_path, tiny))
    assert [p.name for p in (tmp_path / "data").iterdir() if p.is_dir()] == ["pusht_d300_s1500"]  # collected once
    encoders = [p.name.split("-")[0] for p in (tmp_path / "encoders").iterdir() if p.is_dir()]
    assert encoders == ["pusht_d300_s1500__jepa"]  # one encoder per dataset
    models = sorted(p.name.split("-")[0] for p in (tmp_path / "models").iterdir() if p.is_dir())
    assert models == ["pusht_d300_s1500__jepa", "pusht_d300_s6000__jepa"]  # one model per schedule
    rows = {}
    for name in ("pusht_d300_s1500", "pusht_d300_s6000"):
        rows[name] = json.loads((tmp_path / "cells" / f"{name}__jepa__cem.json").read_text())
        assert rows[name]["status"] == "ok" and rows[name]["data"] == "pusht_d300_s1500"
        assert rows[name]["data_episodes"] == 3
    assert (rows["pusht_d300_s1500"]["train_steps"], rows["pusht_d300_s6000"]["train_steps"]) == (2, 4)
    text = report.read_text()
    assert "## Training budget" in text and "training_budget.png" in text
    assert (tmp_path / "training_budget.png").stat().st_size > 0
    table = text.split("## Training budget")[1]
    assert "| pusht_d300_s1500 | jepa | cem | 3 | 2 | 32 |" in table and "| pusht_d300_s6000 | jepa | cem | 3 | 4 | 32 |" in table
    reached = [r for r in rows.values() if r["success_rate"] >= 0.5]
    assert ("Cheapest setting reaching 0.50" if reached else "No setting reached 0.50") in table


def _row(env, episodes, steps, minutes, success, planner="cem"):
    return {"env": env, "encoder": "jepa", "planner": planner, "policy": "planner", "shift": "", "status": "ok",
            "data_episodes": episodes, "train_steps": steps, "train_time_s": 60.0 * minutes,
            "success_rate": success, "ci_low": max(success - 0.1, 0), "ci_high": min(success + 0.1, 1)}


def test_training_budget_section_names_the_cheapest_setting_reaching_the_target(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("pusht_budget", tmp_path))
    rows = [_row("pusht_d1200_s96000", 1200, 96000, 20.0, 0.7), _row("pusht_d300_s1500", 300, 1500, 0.8, 0.1),
            _row("pusht_d1200_s24000", 1200, 24000, 5.0, 0.62), _row("pusht_d300_s6000", 300, 6000, 1.5, 0.3)]
    (study, trs), = budget_studies(s, rows).items()
    assert [r["env"] for r in trs] == ["pusht_d300_s1500", "pusht_d300_s6000", "pusht_d1200_s24000",
                                       "pusht_d1200_s96000"]  # by training minutes
    text = "\n".join(training_budget_tables(budget_studies(s, rows), 0.6))
    assert "Cheapest setting reaching 0.60: pusht_d1200_s24000 (jepa / cem, 5.0 training minutes)" in text
    assert "Highest success: 0.70 (pusht_d1200_s96000" in text
    text = "\n".join(training_budget_tables(budget_studies(s, rows), 0.8))
    assert "No setting reached 0.80; the largest budget here was 20.0 training minutes" in text


def test_entries_of_different_tasks_form_no_budget_study(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("standard", tmp_path))
    rows = [dict(_row("pointmaze", 200, 1500, 1.0, 0.9)), dict(_row("pointmaze_medium", 300, 1500, 1.2, 0.5))]
    assert budget_studies(s, rows) == {}  # U-maze and medium differ in their env options
    assert training_budget_tables(budget_studies(s, rows), 0.6) == []


def test_pusht_pose_config_is_the_measured_setting_on_the_standard_entrys_goals(tmp_path):
    """suite=pusht_pose: the standard suite's pusht_dino_wm goals and planning box / horizon, from the goal
    image alone (alpha 0), with the pose-supervised jepa, 4,800 episodes and the 512 x 3 MLP model."""
    s = suite.SuiteSettings.from_config(_compose_bench("pusht_pose", tmp_path))
    std = suite.SuiteSettings.from_config(_compose_bench("standard", tmp_path))
    assert set(s.envs) == {"pusht_dino_wm"} and set(s.encoders) == {"jepa_pose"} and set(s.planners) == {"cem"}
    assert s.budget_target == 0.6
    mine, theirs = s.envs["pusht_dino_wm"], std.envs["pusht_dino_wm"]
    assert mine.options == theirs.options  # the same goals: start and goal on one push, 25 control steps apart
    assert mine.data.episodes == 4800 and dataclasses.replace(mine.data, episodes=0) == dataclasses.replace(theirs.data, episodes=0)
    cell = s.cell_settings("pusht_dino_wm", "jepa_pose", "cem")
    std_cell = std.cell_settings("pusht_dino_wm", "jepa", "cem")
    assert cell["eval"]["alpha"] == 0.0  # no goal proprio: the latent carries the pusher
    for key in ("action_bound", "horizon", "episodes", "steps", "seed"):
        assert cell["eval"][key] == std_cell["eval"][key], key
    enc = cell["encoder"]
    assert enc["name"] == "jepa" and enc["options"]["state_weight"] == 1.0
    assert enc["options"]["state_entries"] == [0, 1, 2, 3, 4] and enc["train"]["steps"] == 12000
    assert cell["model"]["predictor"]["kind"] == "mlp" and cell["model"]["predictor"]["mlp_dim"] == 512
    assert cell["model"]["predictor"]["depth"] == 3 and cell["train"]["steps"] == 24000


def test_pusht_keypoints_config_is_pusht_pose_from_pixels_alone(tmp_path):
    """suite=pusht_keypoints: pusht_pose's goals, data, world model and planning, with the transporter
    encoder (frame pairs only: no state supervision) in place of the pose-supervised jepa and batches
    of 256 windows in place of 64."""
    s = suite.SuiteSettings.from_config(_compose_bench("pusht_keypoints", tmp_path))
    pose = suite.SuiteSettings.from_config(_compose_bench("pusht_pose", tmp_path))
    assert set(s.envs) == {"pusht_dino_wm"} and set(s.encoders) == {"transporter"} and set(s.planners) == {"cem"}
    assert s.envs["pusht_dino_wm"] == pose.envs["pusht_dino_wm"] and s.budget_target == 0.6
    cell = s.cell_settings("pusht_dino_wm", "transporter", "cem")
    pose_cell = pose.cell_settings("pusht_dino_wm", "jepa_pose", "cem")
    for key in ("eval", "model", "planner"):
        assert cell[key] == pose_cell[key], key
    assert cell["train"]["batch_size"] == 256 and pose_cell["train"]["batch_size"] == 64
    assert {**cell["train"], "batch_size": 64} == pose_cell["train"]
    enc = cell["encoder"]
    assert enc["name"] == "transporter" and "state_weight" not in enc["options"]


def test_a_tiny_pusht_keypoints_suite_runs(tmp_path):
    """The transporter backend through the whole suite (data, encoder, world model, probe, cells, report)."""
    tiny = ["bench.envs.pusht_dino_wm.options.image_size=32", "bench.envs.pusht_dino_wm.data.episodes=3",
            "bench.envs.pusht_dino_wm.data.steps=8", "bench.envs.pusht_dino_wm.probe.points=5",
            "+bench.encoders.transporter.options.width=4", "bench.encoders.transporter.train.steps=2",
            "bench.encoders.transporter.train.batch_size=8", "bench.model_options.predictor.mlp_dim=16",
            "bench.train.steps=2", "bench.train.batch_size=8", "bench.train.val_every=2", "bench.train.ckpt_every=2",
            "bench.train.warmup_steps=1", "bench.train.eval_windows=4",
            "bench.planners.cem.samples=4", "bench.planners.cem.iterations=1", "bench.planners.cem.elites=2",
            "bench.eval.episodes=1", "bench.eval.steps=2", "bench.eval.batch_envs=1", "bench.eval.videos=0",
            "jobs=1", "workers=1", "device=cpu"]
    suite.run_suite(_compose_bench("pusht_keypoints", tmp_path, tiny))
    cells = sorted(p.name for p in (tmp_path / "cells").glob("*.json"))
    assert cells == ["pusht_dino_wm__oracle__none.json", "pusht_dino_wm__random__none.json",
                     "pusht_dino_wm__transporter__cem.json"]
    cell = json.loads((tmp_path / "cells" / "pusht_dino_wm__transporter__cem.json").read_text())
    assert cell["status"] == "ok"
    assert "state-supervised-encoder" not in json.dumps(cell)  # pixels alone: no such label
    assert "| pusht_dino_wm | transporter |" in (tmp_path / "report.md").read_text()
