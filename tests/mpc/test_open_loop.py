"""Open-loop errors split by whether the env's object moves in a window's predicted steps."""
import numpy as np
import pytest
import torch

from mpc.data.format import object_moving
from mpc.evaluation.open_loop import format_object_readout, open_loop_errors


class _Episodes:
    def __init__(self, states):
        self.states, self.shapes = states, {"states": (states[0].shape[1],)}

    def read(self, e, keys):
        return {"states": self.states[e]}


class _Windows(torch.utils.data.Dataset):
    """Windows of T + H frames, one token per frame whose value is the frame index (+ the episode id)."""

    def __init__(self, states, T, H, frameskip=1, env="pusht"):
        self.meta, self.frameskip, self.episodes = {"env": env}, frameskip, _Episodes(states)
        L = T + H
        self.index = [(e, s) for e, st in enumerate(states) for s in range(len(st) - 1 - (L - 1) * frameskip + 1)]
        self.L = L

    def __len__(self):
        return len(self.index)

    def window_index(self, j):
        return self.index[j]

    def __getitem__(self, j):
        e, s = self.index[j]
        frames = torch.arange(self.L, dtype=torch.float32) * self.frameskip + s + 10 * e
        return {"z": frames.view(self.L, 1, 1), "proprio": torch.zeros(self.L, 1),
                "actions": torch.zeros(self.L - 1, 2)}


class _Model(torch.nn.Module):
    """Predicts the last context frame plus ``offset`` per step (1 per env step is the truth here)."""

    num_hist = 3

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def rollout(self, z, proprio, actions, past_actions=None):
        B, S, H = actions.shape[:3]
        last = z[:, -1:]  # (B, 1, N, D)
        steps = torch.arange(1, H + 1, dtype=z.dtype).view(1, H, 1, 1)
        return (last + steps * self.offset).unsqueeze(1).expand(B, S, H, *z.shape[2:]), None


def _still_states(T, block=(200.0, 200.0, 0.0)):
    s = np.zeros((T + 1, 5))
    s[:, 2:5] = block
    return s


def test_object_moving_flags_steps_that_shift_or_turn_the_object():
    s = _still_states(4)
    s[2:, 2] += 5.0                 # shifted between frames 1 and 2
    s[4:, 4] += 0.5                 # turned between frames 3 and 4
    s[:, 0] += np.arange(5) * 50.0  # the agent moves every step: not the object
    assert object_moving(s, (2, 3, 4)).tolist() == [False, True, False, True]
    wrap = _still_states(1)
    wrap[0, 4], wrap[1, 4] = np.pi - 0.001, -np.pi + 0.001  # 0.002 rad the short way round
    assert object_moving(wrap, (2, 3, 4)).tolist() == [False]


def test_open_loop_errors_split_windows_by_object_motion():
    T, H = 3, 2
    moved = _still_states(10)
    moved[4:, 3] += 10.0   # the block moves between frames 3 and 4 only
    still = _still_states(10)
    windows = _Windows([moved, still], T, H)
    # exact model (offset 1 = the frame index step): zero error on every window
    exact = open_loop_errors(_Model(1.0), windows, horizon=H)
    assert exact["ratio"] == pytest.approx([0.0, 0.0])
    # a window starting at s predicts env transitions s+2 -> s+3 and s+3 -> s+4: the move (3 -> 4) is in
    # them for s = 0 and s = 1 of the first episode, not for s >= 2 (it lies in the context), nor in the second
    n = len(windows)
    assert exact["windows"] == n and exact["object_moving_windows"] == 2
    copy = open_loop_errors(_Model(0.0), windows, horizon=H)  # copies the last frame: ratio 1 everywhere
    for key in ("ratio", "ratio_object_moving", "ratio_object_still"):
        assert copy[key] == pytest.approx([1.0, 1.0])
    assert copy["mse_copy_last_object_moving"] == pytest.approx([1.0, 4.0])
    half = open_loop_errors(_Model(0.5), windows, horizon=H)
    assert half["ratio_object_moving"] == pytest.approx([0.25, 0.25])


def test_open_loop_errors_without_an_object_env_or_states_add_no_split():
    states = [_still_states(8)]
    plain = open_loop_errors(_Model(1.0), _Windows(states, 3, 2, env="pointmass"), horizon=2)
    assert "object_moving_windows" not in plain and "ratio_object_moving" not in plain
    windows = _Windows(states, 3, 2)
    windows.episodes.shapes = {}
    assert "object_moving_windows" not in open_loop_errors(_Model(1.0), windows, horizon=2)
    # no moving window: the count is 0 and only the still split is given
    alone = open_loop_errors(_Model(1.0), _Windows(states, 3, 2), horizon=2)
    assert alone["object_moving_windows"] == 0 and "ratio_object_still" in alone
    assert "ratio_object_moving" not in alone


def test_open_loop_errors_object_split_follows_the_frameskip():
    T, H, k = 3, 1, 2
    s = _still_states(12)
    s[9:, 2] += 4.0  # moves between env steps 8 and 9
    windows = _Windows([s], T, H, frameskip=k)
    # window s predicts env steps s + 4 .. s + 6 (one model step of 2 env steps): the move (8 -> 9) is in it for
    # s = 3 and s = 4 only, of the 7 windows
    result = open_loop_errors(_Model(2.0), windows, horizon=H)
    assert result["windows"] == 7 and result["object_moving_windows"] == 2
    assert result["ratio_object_moving"] == pytest.approx([0.0])


class _PoseWindows(_Windows):
    """As _Windows, but each frame's one token is the block's pose (x, y, cos a, sin a) read from the states."""

    def __getitem__(self, j):
        e, s = self.index[j]
        pose = self.episodes.states[e][s + np.arange(self.L) * self.frameskip, 2:5]
        tokens = np.concatenate([pose[:, :2], np.cos(pose[:, 2:]), np.sin(pose[:, 2:])], 1)
        return {"z": torch.tensor(tokens, dtype=torch.float32).view(self.L, 1, 4),
                "proprio": torch.zeros(self.L, 1), "actions": torch.zeros(self.L - 1, 2)}


class _Shift(_Model):
    """Predicts the last context frame plus ``offset`` (a token-sized vector) per step."""

    def __init__(self, offset):
        super().__init__(torch.tensor(offset, dtype=torch.float32).view(1, 1, 1, -1))


def _pose_episodes(turn=0.0):
    """Six episodes of 12 steps: the block slides 3 px per step in x from a start that differs per episode;
    in the even ones (the readout's fit) it also turns 0.25 rad per step, in the odd ones ``turn``."""
    out = []
    for e in range(6):
        s = _still_states(12, block=(100.0 + 40 * e, 150.0 - 30 * e, 0.7 * e - 2.0))
        s[:, 2] += 3.0 * np.arange(13)
        s[:, 4] += (turn if e % 2 else 0.25) * np.arange(13)
        out.append(s)
    return out


def test_object_readout_gives_pose_errors_in_state_units():
    T, H = 3, 2
    windows = _PoseWindows(_pose_episodes(), T, H)
    exact = open_loop_errors(_Shift([3.0, 0.0, 0.0, 0.0]), windows, horizon=H)["object_readout"]
    n_odd = sum(1 for e, _ in windows.index if e % 2)
    assert exact["windows"] == n_odd and exact["fit_frames"] == (len(windows) - n_odd) * (T + H)
    # tokens are linear in the targets: the readout is exact on the true latent and on an exact model
    for part in ("position_error", "angle_error_deg"):
        assert exact[part]["latent"] == pytest.approx([0.0, 0.0], abs=0.05)
        assert exact[part]["model"] == pytest.approx([0.0, 0.0], abs=0.05)
    # copying the last frame misses the slide: 3 px per predicted step
    assert exact["position_error"]["copy_last"] == pytest.approx([3.0, 6.0], abs=0.05)
    still = open_loop_errors(_Shift([0.0, 0.0, 0.0, 0.0]), windows, horizon=H)["object_readout"]
    assert still["position_error"]["model"] == pytest.approx([3.0, 6.0], abs=0.05)


def test_object_readout_measures_the_angle_and_needs_an_object():
    T, H = 3, 2
    turning = _PoseWindows(_pose_episodes(turn=0.1), T, H)
    r = open_loop_errors(_Shift([3.0, 0.0, 0.0, 0.0]), turning, horizon=H)["object_readout"]
    # the odd episodes turn 0.1 rad per step, which neither copying nor this model predicts
    assert r["angle_error_deg"]["copy_last"] == pytest.approx(np.degrees([0.1, 0.2]), abs=0.5)
    assert r["angle_error_deg"]["model"] == pytest.approx(np.degrees([0.1, 0.2]), abs=0.5)
    assert r["angle_error_deg"]["latent"] == pytest.approx([0.0, 0.0], abs=0.5)
    plain = _PoseWindows(_pose_episodes(), T, H, env="pointmass")
    assert "object_readout" not in open_loop_errors(_Shift([3.0, 0.0, 0.0, 0.0]), plain, horizon=H)


def test_suite_report_shows_the_object_readout_at_the_last_step():
    T, H = 3, 2
    metrics = open_loop_errors(_Shift([0.0, 0.0, 0.0, 0.0]), _PoseWindows(_pose_episodes(), T, H), horizon=H)
    text = format_object_readout(metrics["object_readout"])
    n = metrics["object_readout"]["windows"]
    # standing still misses 6 px at step 2; the latent and copying read as in the readout's lists
    assert text == (f"block pose at step 2 read from the latent 0 px / 0 deg, the model 6 px / 0 deg, "
                    f"copying 6 px / 0 deg (median of {n} windows)")
    assert format_object_readout(None) == ""
