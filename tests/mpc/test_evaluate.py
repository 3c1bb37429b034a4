import json
import subprocess
import sys

import numpy as np
import pytest

import encoders
from envs import make_env
from mpc.evaluation import evaluate, wilson_interval
from mpc.world_model import WorldModel, config_from_preset


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_oracle_reaches_goals_random_does_not():
    oracle = evaluate("wall", policy="oracle", episodes=4, steps=50, batch_envs=4, progress=False)
    random = evaluate("wall", policy="random", episodes=4, steps=50, batch_envs=4, progress=False)
    assert oracle.success_rate == 1.0 and oracle.mean_final_distance < oracle.mean_initial_distance
    assert random.success_rate <= 0.5
    assert oracle.per_episode[0]["seed"] == 1_000_000


def _tiny_wall_model() -> WorldModel:
    """An untrained tiny_mlp world model over a random-weight DINOv2 (pooled token) for wall."""
    opts = {"weights": "random", "image_size": 28, "tokens": "pooled"}
    enc = encoders.make_encoder("dinov2", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=2,
                             encoder="dinov2", encoder_options=opts)
    return WorldModel(cfg, encoder=enc)


@pytest.fixture
def wall_model(tmp_path):
    return _tiny_wall_model().save(tmp_path / "wall.safetensors")


def test_eval_command_with_a_checkpoint_writes_results_and_video(tmp_path, wall_model):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", "env=wall", f"checkpoint={wall_model}",
                        "planner=cem", "planner.samples=16", "planner.iterations=2", "planner.elites=4",
                        "episodes=3", "steps=4", "batch_envs=2", "videos=1", f"out={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "success" in r.stdout and "ms per replan" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["episodes"] == 3 and res["policy"] == "planner" and res["mean_plan_time_s"] > 0
    assert res["mean_final_latent_distance"] is not None
    assert (out / "episode_000.gif").exists()


def test_eval_baseline_through_the_same_command(tmp_path):
    out = tmp_path / "rand"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", "env=wall", "policy=oracle",
                        "episodes=2", "steps=40", "videos=0", f"out={out}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["success_rate"] == 1.0


def test_planner_policy_needs_a_checkpoint():
    with pytest.raises(ValueError, match="checkpoint"):
        evaluate("wall", policy="planner", episodes=1, steps=1, progress=False)


def test_settings_objects_equal_keyword_options():
    from mpc.evaluation import EvalSettings
    a = evaluate("wall", policy="oracle", episodes=2, steps=5, batch_envs=2, videos=0, progress=False)
    b = evaluate("wall", policy="oracle", settings=EvalSettings(episodes=2, steps=5, batch_envs=2, videos=0),
                 progress=False)
    assert a.per_episode == b.per_episode
    with pytest.raises(TypeError, match="Did you mean episodes"):
        evaluate("wall", policy="oracle", episods=2, progress=False)


@pytest.fixture
def wall_task_model(tmp_path):
    """A tiny wall model whose checkpoint stores the task (bounds, 64 px images, env)."""
    model = _tiny_wall_model()
    model.set_task(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=64, env="wall",
                   env_options={"image_size": 64, "action_repeat": 1})
    return model.save(tmp_path / "wall_task.safetensors")


def test_evaluate_runs_the_env_as_the_model_learnt_it_unless_told_otherwise(tmp_path):
    """A model trained with action_repeat 3 is evaluated with action_repeat 3 (its data's env options), as
    ``wmpc eval`` does; options given win; on another env only the image size carries over."""
    model = _tiny_wall_model()
    model.set_task(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=28, env="wall",
                   env_options={"image_size": 28, "action_repeat": 3})
    kw = dict(planner="cem", planner_options={"samples": 4, "iterations": 1, "elites": 2}, episodes=1, steps=1,
              batch_envs=1, videos=0, progress=False)
    assert evaluate("wall", model=model, **kw).env_options == {"image_size": 28, "action_repeat": 3}
    res = evaluate("wall", model=model, env_options={"action_repeat": 1}, **kw)
    assert res.env_options == {"image_size": 28, "action_repeat": 1}
    from mpc.evaluation.evaluate import _env_options

    assert _env_options("pointmass", None, model) == {"image_size": 28}


def _eval_wall(out, checkpoint, *overrides, episodes: int = 2, steps: int = 3):
    """``wmpc eval env=wall`` with a small CEM and ``overrides``; its stdout and results.json."""
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", "env=wall", f"checkpoint={checkpoint}",
                        *overrides, "planner=cem", "planner.samples=16", "planner.iterations=2", "planner.elites=4",
                        f"episodes={episodes}", f"steps={steps}", f"batch_envs={episodes}", "videos=0", f"out={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, json.loads((out / "results.json").read_text())


def test_eval_labels_rows_of_a_state_supervised_encoder():
    """A world model whose jepa encoder was trained with state supervision (a state head: privileged
    in training) plans from the goal image alone, and its rows say how the encoder was trained."""
    rows = {}
    for state_dim in (0, 3):
        opts = {"weights": "random", "image_size": 32, "width": 8, "hidden": 32, "dim": 8,
                "state_weight": float(state_dim > 0), "state_dim": state_dim}
        enc = encoders.make_encoder("jepa", **opts)
        cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=2,
                                 encoder="jepa", encoder_options=opts)
        rows[state_dim] = evaluate("wall", model=WorldModel(cfg, encoder=enc), episodes=1, steps=2, batch_envs=1,
                                   videos=0, planner_options={"samples": 8, "iterations": 1, "elites": 2},
                                   progress=False).labels
    assert rows == {0: [], 3: ["state-supervised-encoder"]}


def test_eval_command_with_goal_proprio_labels_its_rows(tmp_path, wall_task_model):
    stdout, results = _eval_wall(tmp_path / "gp", wall_task_model, "alpha=1.0")
    assert "[goal-proprio]" in stdout
    assert results["labels"] == ["goal-proprio"]


def test_eval_goal_proprio_differs_from_images_alone_and_needs_the_envs_goal_proprio(wall_task_model):
    from mpc.evaluation.policies import PlannerPolicy, PlannerSettings

    model = WorldModel.load(wall_task_model)
    kw = dict(model=model, episodes=2, steps=3, batch_envs=2, videos=0, planner_options={"samples": 16,
              "iterations": 2, "elites": 4}, progress=False)
    plain = evaluate("wall", **kw)
    steered = evaluate("wall", alpha=1.0, **kw)
    assert plain.labels == [] and steered.labels == ["goal-proprio"]
    assert [r["final_distance"] for r in plain.per_episode] != [r["final_distance"] for r in steered.per_episode]
    policy = PlannerPolicy(model, None, PlannerSettings(alpha=1.0, planner_options=kw["planner_options"]), seed=0)
    obs = {"pixels": np.zeros((1, 64, 64, 3), np.uint8), "proprio": np.zeros((1, 2), np.float32)}
    with pytest.raises(ValueError, match=r"no info\['goal_proprio'\]"):
        policy.act(obs, {"goal_image": np.zeros((1, 64, 64, 3), np.uint8)})


def test_eval_command_plans_in_a_shrunk_action_box_and_labels_its_rows(tmp_path, wall_task_model):
    from mpc.evaluation.policies import PlannerPolicy, PlannerSettings

    _, results = _eval_wall(tmp_path / "bound", wall_task_model, "action_bound=0.3", episodes=1, steps=2)
    assert results["labels"] == ["action-bound=0.3"]
    model = WorldModel.load(wall_task_model)
    env = make_env("wall", image_size=64)
    obs, info = env.reset(seed=0)
    policy = PlannerPolicy(model, env.action_space, PlannerSettings(
        action_bound=0.3, planner_options={"samples": 16, "iterations": 2, "elites": 4}), seed=0)
    batch = {"pixels": obs["pixels"][None], "proprio": obs["proprio"][None]}
    a = policy.act(batch, {"goal_image": info["goal_image"][None]})
    centre, half = (env.action_space.high + env.action_space.low) / 2, (env.action_space.high - env.action_space.low) / 2
    assert np.all(np.abs(a - centre) <= 0.3 * half + 1e-6)


def test_eval_of_a_proprio_free_model():
    opts = {"weights": "random", "image_size": 28, "tokens": "pooled"}
    enc = encoders.make_encoder("dinov2", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=0,
                             encoder="dinov2", encoder_options=opts)
    r = evaluate("wall", model=WorldModel(cfg, encoder=enc), episodes=2, steps=3, batch_envs=2, videos=0,
                 planner_options={"samples": 16, "iterations": 2, "elites": 4}, progress=False)
    assert r.episodes == 2 and r.mean_plan_time_s > 0
    with pytest.raises(ValueError, match="predicts no proprio"):
        evaluate("wall", model=WorldModel(cfg, encoder=enc), alpha=1.0, episodes=1, steps=1, progress=False)


def _tiny_vae_wall_model() -> WorldModel:
    """An untrained tiny_mlp world model over a small (untrained) VAE, whose tokens decode to images."""
    opts = {"image_size": 32, "tokens": "vector", "dim": 4, "width": 4, "weights": "random"}
    enc = encoders.make_encoder("vae", **opts)
    cfg = config_from_preset("tiny_mlp", num_tokens=1, token_dim=enc.dim, env_action_dim=2, proprio_dim=2,
                             encoder="vae", encoder_options=opts)
    return WorldModel(cfg, encoder=enc)


def _gif_frames(path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(path)])


def test_episode_gifs_show_the_decoded_prediction_beside_the_real_frame(tmp_path):
    S = 32
    res = evaluate("wall", model=_tiny_vae_wall_model(), planner="cem", planner_options={"samples": 8, "iterations": 1,
                   "elites": 2}, episodes=1, steps=3, batch_envs=1, videos=1, out=tmp_path / "vae", progress=False,
                   env_options={"image_size": S})
    frames = _gif_frames(tmp_path / "vae" / "episode_000.gif")
    assert frames.shape[1:] == (S, 3 * S + 4, 3)  # real | predicted | goal
    middle = frames[:, :, S + 2:2 * S + 2].astype(int)
    assert np.all(middle[0] == 128)  # no plan yet: grey
    assert np.ptp(middle[1]) > 0 and not np.all(middle[1] == 128)  # the first plan's decoded prediction
    assert res.imagination_gap["plans"] >= 1

    res = evaluate("wall", model=_tiny_wall_model(), planner="cem", planner_options={"samples": 8, "iterations": 1,
                   "elites": 2}, episodes=1, steps=2, batch_envs=1, videos=1, out=tmp_path / "dino", progress=False,
                   env_options={"image_size": 28})
    assert _gif_frames(tmp_path / "dino" / "episode_000.gif").shape[1:] == (28, 2 * 28 + 2, 3)  # no decoder


def test_predicted_frames_decode_the_plans_tokens_for_the_chosen_envs():
    import gymnasium as gym
    import torch

    from mpc.evaluation.policies import PlannerPolicy, PlannerSettings

    model = _tiny_vae_wall_model()
    policy = PlannerPolicy(model, gym.spaces.Box(-1, 1, (2,), np.float32), PlannerSettings(), seed=0)
    assert policy.can_decode and policy.predicted_frames([0], size=32) is None  # before any plan
    imgs = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    z = model.encode(imgs)
    policy.controller.predicted_tokens = z
    out = policy.predicted_frames([2, 0], size=16)
    with torch.no_grad():
        want = torch.nn.functional.interpolate(model.encoder.decode(z[[2, 0]]), size=(16, 16), mode="bilinear",
                                               align_corners=False)
    want = (want.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert out.shape == (2, 16, 16, 3) and np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_eval_command_runs_under_a_factor_combination_given_on_the_command_line(tmp_path):
    out = tmp_path / "shifted"
    combo = "+env.variation={split: train, agent_rgb: [0.1, 0.1, 0.9], door_width: 0.11, light: 0.5}"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", "env=wall", "policy=oracle", "episodes=2",
                        "steps=60", "videos=0", f"out={out}", combo], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown factor 'light'" in r.stderr  # wall has no light factor
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", "env=wall", "policy=oracle", "episodes=2",
                        "steps=60", "videos=0", f"out={out}", combo.replace(", light: 0.5", "")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["env_options"]["variation"] == {"split": "train", "agent_rgb": [0.1, 0.1, 0.9], "door_width": 0.11}
    assert res["success_rate"] == 1.0  # the oracle still reaches every goal through the narrow door


def test_eval_command_reads_the_goal_proprio_from_the_goal_image_with_an_estimator(tmp_path, wall_task_model):
    from mpc.proprio_estimator import ProprioEstimator

    est = ProprioEstimator(64, 2, width=4, num_keypoints=4, hidden=8).save(tmp_path / "est.safetensors")
    _, results = _eval_wall(tmp_path / "from_image", wall_task_model, "alpha=1.0", f"proprio_estimator={est}")
    assert results["labels"] == ["proprio-from-goal-image"]
    small = ProprioEstimator(32, 2, width=4, num_keypoints=4, hidden=8).save(tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="takes 32 px images, the world model 64 px"):
        evaluate("wall", model=WorldModel.load(wall_task_model), alpha=1.0, proprio_estimator=str(small),
                 episodes=1, steps=1, videos=0, progress=False)


def test_train_distance_and_eval_with_it_from_the_command_line(tmp_path):
    """``wmpc train-distance`` fills the model's latent cache of a dataset and fits a distance there;
    ``wmpc eval distance=`` plans with it and labels its rows; another encoder's distance is refused."""
    from mpc.data import collect
    from mpc.temporal_distance import DISTANCE_FILE, TemporalDistance

    data = collect(env="wall", out=tmp_path / "data", episodes=3, steps=6, policy="colored-noise", seed=0,
                   image_size=28, progress=False)
    model = _tiny_wall_model()
    model.set_task(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=28, env="wall",
                   env_options={"image_size": 28, "action_repeat": 1})
    ckpt = model.save(tmp_path / "wall.safetensors")
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "train-distance", f"checkpoint={ckpt}", f"data={data}",
                        f"out={dist}", "steps=3", "batch_size=16", "hidden=8", "dim=4", "progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rank correlation" in r.stdout and f"distance={dist / DISTANCE_FILE}" in r.stdout
    assert TemporalDistance.load(dist / DISTANCE_FILE).fingerprint == model.encoder_fingerprint
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "mpc.commands", "eval", f"checkpoint={ckpt}",
                        f"distance={dist / DISTANCE_FILE}", "planner=cem", "planner.samples=8", "planner.iterations=1",
                        "planner.elites=2", "episodes=1", "steps=2", "batch_envs=1", "videos=0", f"out={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["labels"] == ["temporal-distance"]
    other = TemporalDistance(1, model.token_dim, "another encoder", dim=4, hidden=8).save(tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match="another encoder"):
        evaluate("wall", model=WorldModel.load(ckpt), distance=str(other), episodes=1, steps=1, videos=0,
                 progress=False)


def test_the_policy_is_told_which_envs_are_still_under_way(monkeypatch):
    from mpc.evaluation import policies

    masks, reached_at = [], {}
    act = policies.OraclePolicy.act

    def spy(self, obs, info):
        masks.append(info["active"].copy())
        return act(self, obs, info)

    monkeypatch.setattr(policies.OraclePolicy, "act", spy)
    result = evaluate("wall", policy="oracle", episodes=4, steps=50, batch_envs=4, progress=False)
    assert result.success_rate == 1.0 and masks[0].all()
    for t, m in enumerate(masks):
        for j in np.flatnonzero(~m):
            reached_at.setdefault(j, t)
        assert all(not m[j] for j, t0 in reached_at.items() if t >= t0)  # done envs stay done
    assert reached_at and not masks[-1].all()  # some env reached its goal before the last one
