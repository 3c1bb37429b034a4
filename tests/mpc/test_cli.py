import subprocess
import sys

import pytest

from mpc.commands import cli

GYM_ID = "tests.mpc.fake_envs:FakeGoal-v0"


def _wmpc(*args):
    return subprocess.run([sys.executable, "-m", "mpc.commands", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_registered_command():
    r = _wmpc("--help")
    assert r.returncode == 0
    for name in ("info", "collect", "encode", "train", "eval", "bench", "train-encoder"):
        assert f"  {name}" in r.stdout


def test_version():
    r = _wmpc("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("wmpc ")


def test_unknown_command_suggests_the_close_one():
    r = _wmpc("trian")
    assert r.returncode == 2 and "Did you mean 'train'" in r.stderr


def test_info_reports_versions_encoders_and_weights():
    r = _wmpc("info")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "device:" in r.stdout
    assert "dinov2-vits14" in r.stdout and ("no weights" in r.stdout or "weights available" in r.stdout)
    for env in ("pointmass", "reacher", "wall", "pusht", "pointmaze"):
        assert env in r.stdout


def test_env_overrides():
    assert cli.env_overrides(["env=pusht", "episodes=2"]) == ["env=pusht", "episodes=2"]  # has a yaml
    assert cli.env_overrides([f"env={GYM_ID}", "env.speed=2", "seed=1"]) == [
        "~env", f"+env.name={GYM_ID}", "seed=1", "+env.speed=2"]


@pytest.mark.parametrize("args, words", [
    (["collect", "env=pointmass", "episodes=1", "steps=2", "policy=bogus"], "unknown policy 'bogus'"),
    (["train", "data=/nonexistent/data", "encoder=nosuch"], "available encoder configs: diffusion"),
    (["collect", "env=wall", "episodes=0"], "episodes"),
])
def test_user_errors_are_one_message_without_traceback(tmp_path, args, words):
    r = subprocess.run([sys.executable, "-m", "mpc.commands", *args, f"out={tmp_path / 'out'}"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr
    assert r.stderr.startswith(f"wmpc {args[0]}: error: ") and words in r.stderr, r.stderr
    debug = subprocess.run([sys.executable, "-m", "mpc.commands", *args, f"out={tmp_path / 'out'}", "--debug"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
