"""The suite's two extra axes: distribution shifts (generalization) and the risk weight of a planner
entry (uncertainty-aware planning with an ensemble)."""
from __future__ import annotations

import json

import pytest

import envs
from benchmarks import suite
from benchmarks.suite.generalization import shift_tables
from envs.variation import held_out_shifts, resolve_variation

from tests.benchmarks.test_suite import _compose_bench

_TINY_TRAIN = ["bench.model_options.predictor.dim=16", "bench.model_options.predictor.mlp_dim=16",
               "bench.train.steps=2", "bench.train.batch_size=8", "bench.train.val_every=2",
               "bench.train.ckpt_every=2", "bench.train.warmup_steps=1", "bench.train.eval_windows=4",
               "bench.eval.episodes=2", "bench.eval.steps=2", "bench.eval.batch_envs=2", "bench.eval.videos=0",
               "jobs=1", "workers=1", "device=cpu"]


@pytest.mark.parametrize("env", ["pointmass", "wall", "reacher", "pusht", "pointmaze"])
def test_held_out_shifts_change_only_their_factor_group(env):
    factors = envs.env_factors(env)
    shifts = held_out_shifts(factors)
    assert "test" in shifts and len(shifts) >= 4
    _, train = resolve_variation("train", factors)
    for name, variation in shifts.items():
        if name == "test":
            continue
        _, ranges = resolve_variation(variation, factors)
        changed = {f for f in factors if ranges[f] != train[f]}
        assert changed and all(f.split("_", 1)[0] == name for f in changed), (name, changed)


def test_generalization_config_composes_with_a_shift_per_factor_group(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("generalization", tmp_path))
    assert s.env_order == ["pointmass", "wall", "reacher", "pusht"]
    assert set(s.encoders) == {"vae", "diffusion", "jepa", "dinov2"}
    for es in s.envs.values():
        assert es.options["variation"] == "train" and es.probe is not None
        assert list(es.shifts)[-1] == "test" and es.options_for("test")["variation"] == "test"
        assert es.options_for("")["variation"] == "train"
    assert "door" in s.envs["wall"].shifts and "object" in s.envs["pusht"].shifts


def test_a_custom_shift_naming_an_unknown_factor_fails_before_anything_runs(tmp_path):
    cfg = _compose_bench("generalization", tmp_path, ["select.env=pusht", "+bench.custom_shifts.dark={light: 0.3}"])
    with pytest.raises(ValueError, match="shift 'dark'.*unknown factor 'light'"):
        suite.SuiteSettings.from_config(cfg)


def test_a_tiny_generalization_suite_evaluates_every_shift_and_resumes(tmp_path, monkeypatch):
    combo = "+bench.envs.wall.custom_shifts.combo={split: train, agent_rgb: [0.1, 0.9, 0.1], door_width: 0.12}"
    tiny = ["select.env=wall", "select.encoder=vae", "bench.envs.wall.options.image_size=32",
            "bench.envs.wall.data.episodes=3", "bench.envs.wall.data.steps=8", "bench.envs.wall.probe.points=5",
            "bench.encoders.vae.options.width=4", "bench.encoders.vae.train.steps=2",
            "bench.encoders.vae.train.batch_size=8", "bench.planners.cem.samples=4",
            "bench.planners.cem.iterations=1", "bench.planners.cem.elites=2", combo, *_TINY_TRAIN]
    cfg = _compose_bench("generalization", tmp_path, tiny)
    report = suite.run_suite(cfg)
    shifts = ["agent", "floor", "wall", "door", "distractor", "test", "combo"]
    for s in ["", *shifts]:
        at = f"@{s}" if s else ""
        for name in (f"wall__vae__cem{at}", f"wall__oracle__none{at}", f"wall__random__none{at}"):
            row = json.loads((tmp_path / "cells" / f"{name}.json").read_text())
            assert row["status"] == "ok" and row["shift"] == s
        assert json.loads((tmp_path / "probes" / f"wall__vae{at}.json").read_text())["shift"] == s
    meta = json.loads((tmp_path / "data" / "wall" / "dataset.json").read_text())
    assert meta["variation"]["split"] == "train"  # the data come from the train split only
    text = report.read_text()
    assert "## Generalization under distribution shifts" in text and "generalization.png" in text
    assert (tmp_path / "generalization.png").stat().st_size > 0
    header = next(line for line in text.splitlines() if line.startswith("| encoder / planner |"))
    assert header.split("|")[2:-1] == [" train condition ", *[f" {s} " for s in shifts]]
    main_table = text.split("## Why each result")[0]
    main_rows = [line for line in main_table.splitlines() if line.startswith("| wall | vae | cem |")]
    assert len(main_rows) == 1  # the main table holds the training condition only

    import mpc.evaluation
    import mpc.training

    for module, name in ((mpc.training, "train"), (mpc.evaluation, "evaluate")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called on a resumed suite"))
    suite.run_suite(cfg)


def test_shift_tables_report_the_drop_from_the_training_condition():
    rows = [{"env": "wall", "encoder": "jepa", "planner": "cem", "shift": s, "status": "ok", "success_rate": v}
            for s, v in (("", 0.9), ("agent", 0.6), ("test", 0.1))]
    probes = [{"env": "wall", "encoder": "jepa", "shift": s, "spearman": v} for s, v in (("", 0.9), ("test", 0.4))]
    lines = shift_tables(rows, probes)
    assert "| jepa / cem | 0.90 | 0.60 (+0.30) | 0.10 (+0.80) |" in lines
    assert "| jepa | 0.90 | 0.40 |" in lines
    assert shift_tables([dict(r, shift="") for r in rows[:1]], []) == []


@pytest.mark.parametrize("kind", ["full", "heads"])
def test_risk_planner_entries_evaluate_an_ensemble_and_report_the_gap(tmp_path, kind):
    all_entries = suite.SuiteSettings.from_config(_compose_bench("risk", tmp_path)).planners
    assert [(p.risk, p.risk_mode) for p in all_entries.values()] == [
        (0.0, "disagreement"), (0.5, "disagreement"), (1.0, "disagreement"), (2.0, "disagreement"),
        (0.5, "standardized"), (1.0, "standardized"), (2.0, "standardized")]
    assert {p.name for p in all_entries.values()} == {"cem"}
    picked = ("cem", "cem_risk1", "cem_std1")
    tiny = ["select.env=wall", f"select.planner=[{','.join(picked)}]", "bench.envs.wall.options.image_size=32",
            "bench.envs.wall.data.episodes=3", "bench.envs.wall.data.steps=8", "bench.encoders.jepa.options.width=4",
            "bench.encoders.jepa.options.hidden=16", "bench.encoders.jepa.train.steps=2",
            "bench.encoders.jepa.train.batch_size=8", "bench.model_options.ensemble=2",
            f"bench.model_options.ensemble_kind={kind}",
            *[f"bench.planners.{p}.{k}={v}" for p in picked for k, v in (("samples", 4), ("iterations", 1),
                                                                        ("elites", 2))], *_TINY_TRAIN]
    cfg = _compose_bench("risk", tmp_path, tiny)
    s = suite.SuiteSettings.from_config(cfg)
    report = suite.run_suite(cfg)
    rows = {p: json.loads((tmp_path / "cells" / f"wall__jepa__{p}.json").read_text()) for p in s.planners}
    for name, row in rows.items():
        assert row["status"] == "ok" and row["ensemble"] == 2 and row["risk"] == s.planners[name].risk
        assert row["ensemble_kind"] == kind
        assert row["risk_mode"] == s.planners[name].risk_mode and row["rollouts_per_plan"] == 4
        assert row["gap_plans"] > 0 and row["gap_mean"] == pytest.approx(row["gap_realised"] - row["gap_predicted"])
    assert "risk=1" in rows["cem_risk1"]["labels"] and "risk=1 standardized" in rows["cem_std1"]["labels"]
    assert not rows["cem"]["labels"]
    text = report.read_text()
    assert "## Risk-aware planning" in text and (tmp_path / "risk.png").exists()
    risk_section = text.split("## Risk-aware planning")[1].split("Ensemble disagreement")[0]
    table = [line for line in risk_section.splitlines() if line.startswith("| wall | jepa | 2 |")]
    assert [line.split("|")[4:6] for line in table] == [[" - ", " 0 "], [" disagreement ", " 1 "],
                                                        [" - ", " 0 "], [" standardized ", " 1 "]]
    assert (tmp_path / "gap_vs_success.png").exists()
    ens = json.loads((tmp_path / "probes" / "wall__jepa.ensemble.json").read_text())
    assert ens["members"] == 2 and ens["cost_std"] > 0 and ens["disagreement_mean"] >= 0
    assert ens["ratio"] == pytest.approx(ens["disagreement_std"] / ens["cost_std"])
    assert "| wall | jepa | 2 |" in text and "disagreement std" in text


def test_a_negative_risk_weight_is_refused(tmp_path):
    cfg = _compose_bench("risk", tmp_path, ["bench.planners.cem_risk1.risk=-1"])
    with pytest.raises(ValueError, match="risk must be >= 0"):
        suite.SuiteSettings.from_config(cfg)


def _row(planner, rollouts, k, n=30, name="cem"):
    from mpc.evaluation import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"env": "wall", "encoder": "jepa", "planner": planner, "planner_name": name, "policy": "planner",
            "status": "ok", "success_rate": k / n, "ci_low": lo, "ci_high": hi, "rollouts_per_plan": rollouts,
            "plan_time_ms": 1.0}


def test_budget_tables_name_the_cheapest_cell_whose_interval_overlaps_the_reference(tmp_path):
    from benchmarks.suite.budget import budget_tables, plot_budget

    rows = [_row("ref", 9000, 27), _row("tiny", 64, 3), _row("small", 256, 22, name="mppi"), _row("mid", 900, 26)]
    lines = budget_tables(rows, "ref")
    cheapest = next(line for line in lines if line.startswith("| wall | jepa | 0.90"))
    assert "| small |" in cheapest and "| 1/35 |" in cheapest  # tiny (0.10) does not overlap; small does
    assert any("| tiny | 64 |" in line and "| no |" in line for line in lines)
    better = budget_tables([_row("ref", 9000, 10), _row("tiny", 64, 29)], "ref")  # 0.33 against 0.97
    assert any("| tiny | 64 |" in line and "| better |" in line for line in better)
    assert "| tiny |" in next(line for line in better if line.startswith("| wall | jepa | 0.33"))
    assert budget_tables(rows, None) == [] and budget_tables(rows[1:], "ref") == []
    assert plot_budget(rows, "ref", tmp_path / "b.png").stat().st_size > 0


def test_budget_config_reuses_the_standard_suite_and_checks_its_reference(tmp_path):
    s = suite.SuiteSettings.from_config(_compose_bench("budget", tmp_path))
    std = suite.SuiteSettings.from_config(_compose_bench("standard", tmp_path))
    assert s.reference_planner == "cem_300x30" and s.env_order == std.env_order
    assert s.model == std.model and s.train == std.train  # same models: the standard folder's are reused
    ref = s.planners["cem_300x30"]
    assert ref.options["samples"] * ref.options["iterations"] == 9000
    for name, p in s.planners.items():
        if name != "cem_300x30":
            assert p.options.get("samples", 8) * p.options.get("iterations", p.options.get("steps", 30)) <= 900
    with pytest.raises(ValueError, match="reference_planner='nope' is no planner entry"):
        suite.SuiteSettings.from_config(_compose_bench("budget", tmp_path, ["bench.reference_planner=nope"]))


def test_evaluation_counts_the_rollouts_of_every_replan():
    from mpc.evaluation import evaluate
    from tests.mpc.test_evaluate import _tiny_wall_model

    res = evaluate("wall", model=_tiny_wall_model(), planner="cem", planner_options={"samples": 6, "iterations": 3,
                   "elites": 2}, episodes=2, steps=3, batch_envs=2, progress=False, env_options={"image_size": 28})
    assert res.mean_rollouts_per_plan == 18
