"""The suite's latent probe per task: maze path distance, reacher joint space, Push-T parts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from benchmarks.suite.probe import PROBE_KINDS, latent_probe, line_rate, path_distance, pusher_weight

# A hand-made maze (1 = wall): two dead-end corridors joined at the bottom, so the cells (1, 1)
# and (1, 3) are 2 apart in a straight line but 6 cell steps apart through the maze; cell (1, 5)
# is walled off. Cells are unit squares, centre of (row, col) at (x, y) = (col, -row).
MAZE = [[1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 0, 1, 0, 1],
        [1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 0, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1]]


def _cell_of(xy):
    return int(round(-xy[1])), int(round(xy[0]))


def _cell_xy(cell):
    return np.array([cell[1], -cell[0]], float)


def _path(a, b):
    return path_distance(MAZE, _cell_of, _cell_xy, a, b)


def test_path_distance_follows_the_corridors_not_the_straight_line():
    a, b = np.array([1.0, -1.0]), np.array([3.0, -1.0])
    assert np.linalg.norm(a - b) == 2.0
    assert _path(a, b) == pytest.approx(6.0) == _path(b, a)
    assert _path(a, [1.0, -3.0]) == pytest.approx(2.0)             # straight down a corridor: exact
    assert _path([1.0, -1.3], b) == pytest.approx(5.7)             # already 0.3 along the first step
    assert _path([1.0, -1.2], [1.1, -1.0]) == pytest.approx(np.hypot(0.1, 0.2))  # one cell: straight line
    assert _path([1.0, -1.49], [1.0, -1.51]) == pytest.approx(0.02)  # continuous across a cell border
    assert _path(a, [5.0, -1.0]) == float("inf")                   # no path into the walled-off cell


class _ColourCentroid:
    """Tokens = the pixel centroid of one colour (a position encoder blind to everything else)."""

    def __init__(self, rgb, tol=40):
        self.rgb, self.tol = np.array(rgb, float), tol

    def encode(self, images):
        im = np.asarray(images).astype(float)
        mask = np.abs(im - self.rgb).max(-1) < self.tol
        ys, xs = np.mgrid[: im.shape[1], : im.shape[2]]
        n = np.maximum(mask.sum((1, 2)), 1)
        c = np.stack([(mask * xs).sum((1, 2)) / n, (mask * ys).sum((1, 2)) / n], -1)
        return torch.as_tensor(c, dtype=torch.float32)[:, None, :]


class _Pixels:
    def encode(self, images):
        return torch.as_tensor(np.asarray(images), dtype=torch.float32).flatten(1)[:, None, :] / 255.0


class _OnlyX(_ColourCentroid):
    """The colour centroid's x alone: blind to vertical motion."""

    def encode(self, images):
        return super().encode(images)[..., :1]


def test_line_rates_show_the_direction_a_latent_underweights():
    """Per probe line, latent distance per unit true distance: a latent of x alone moves along the
    horizontal line and not along the vertical one."""
    lines = [[[-0.2, 0.0], [0.2, 0.0]], [[0.0, -0.2], [0.0, 0.2]]]
    env = envs.make_env("pointmass", image_size=32)
    try:
        env.reset(seed=0)
        agent = env.unwrapped.render_state(np.zeros(4))  # find the agent's colour: the pixels unlike the floor
    finally:
        env.close()
    floor = np.median(agent.reshape(-1, 3), axis=0)
    far = np.abs(agent.astype(float) - floor).sum(-1)
    rgb = agent.reshape(-1, 3)[np.argmax(far)]
    both = latent_probe("pointmass", {"image_size": 32}, _ColourCentroid(rgb), lines, points=9)
    only_x = latent_probe("pointmass", {"image_size": 32}, _OnlyX(rgb), lines, points=9)
    assert len(both["line_rates"]) == 2 and min(both["line_rates"]) > 0.5 * max(both["line_rates"])
    horizontal, vertical = only_x["line_rates"]
    assert horizontal > 0 and vertical < 0.05 * horizontal
    assert line_rate([np.zeros(3)], [np.ones(3)]) is None


def test_pointmaze_probe_measures_path_distance_and_skips_walls():
    assert PROBE_KINDS["pointmaze"] == "path"
    # U-maze: (-1, 1) and (-1, -1) are free cell centres 2 apart with a wall cell (y in [-0.5, 0.5))
    # between them; the path goes round the U (6 cell steps)
    probe = latent_probe("pointmaze", {"image_size": 16}, _Pixels(), [[[-1.0, 1.0], [-1.0, -1.0]]], points=9)
    true = np.array(probe["true"]).reshape(3, 5)  # y = 0.5, 0.25, 0, -0.25 lie in the wall: dropped
    np.testing.assert_allclose(true[0], [0.0, 0.25, 6.0, 6.0, 6.0])  # goal (-1, 1): y = 1, .75, -.5, -.75, -1
    assert true[0, -1] > 2.0  # the straight line would say 2


def test_reacher_probe_is_in_wrapped_joint_space():
    # the shoulder sweeps from -3 to 3 rad: the ends are 2*pi - 6 = 0.28 rad apart, not 6
    probe = latent_probe("reacher", {"image_size": 16}, _Pixels(), [[[-3.0, 0.0], [3.0, 0.0]]], points=7)
    true = np.array(probe["true"]).reshape(3, 7)
    assert true.max() <= np.pi + 1e-9
    assert true[0, -1] == pytest.approx(2 * np.pi - 6.0)


def test_pusht_probe_separates_block_from_pusher():
    assert PROBE_KINDS["pusht"] == "pusht"
    lines = [[[150.0, 256.0], [360.0, 256.0]], [[256.0, 150.0], [256.0, 360.0]]]
    pusher = latent_probe("pusht", {"image_size": 64}, _ColourCentroid((65, 105, 225)), lines, points=9)
    parts = pusher["parts"]
    assert set(parts) == {"block_position", "block_angle", "agent"}
    assert parts["agent"]["spearman"] > 0.9            # sees the pusher ...
    assert abs(parts["block_position"]["spearman"]) < 0.2 and abs(parts["block_angle"]["spearman"]) < 0.2  # ... not the block
    assert pusher["spearman"] == parts["block_position"]["spearman"]
    assert max(parts["block_angle"]["true"]) <= np.pi + 1e-9
    block = latent_probe("pusht", {"image_size": 64}, _ColourCentroid((119, 136, 153)), lines, points=9)
    assert block["parts"]["block_position"]["spearman"] > 0.9 and abs(block["parts"]["agent"]["spearman"]) < 0.2
    # the pusher's weight: near 1 for a latent of the pusher alone, near 0 for one of the block alone
    assert pusher_weight(parts) > 0.9
    assert pusher_weight(block["parts"]) < 0.1


def test_pusher_weight_is_the_pushers_share_of_latent_distance_per_pixel():
    part = lambda rate: {"true": [0.0, 10.0, 20.0], "latent": [0.0, 10.0 * rate, 20.0 * rate]}  # noqa: E731
    assert pusher_weight({"agent": part(1.0), "block_position": part(3.0)}) == pytest.approx(0.25)
    assert pusher_weight({"agent": part(0.0), "block_position": part(2.0)}) == 0.0
    assert pusher_weight({"agent": part(0.0), "block_position": part(0.0)}) is None
    assert pusher_weight({"block_position": part(1.0)}) is None
