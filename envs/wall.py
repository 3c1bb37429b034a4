"""Wall: move a dot through the door of a wall that splits a square room (DINO-WM / PLDM "wall").

No simulator: the dynamics are clipped displacements with sliding collisions, and frames are
drawn with numpy (a cached background plus an anti-aliased disc), a few microseconds per step.
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .base import GoalEnv
from .variation import Factor

__all__ = ["WallEnv"]

_FLOOR = np.array([235, 235, 235], np.float32)
_WALL = np.array([40, 40, 40], np.float32)
_AGENT = np.array([220, 50, 50], np.float32)


class WallEnv(GoalEnv):
    """Reach a goal position in a square room split by a vertical wall with one door.

    ## Description
    The room is the unit square ``[0, 1]^2`` (y up) inside a border wall of thickness
    ``border``; a vertical wall of thickness ``wall_width`` centred at x = 0.5 splits it, with a
    door (a gap) of height ``door_width`` centred at y = ``door_center``. The agent is a disc of
    radius ``agent_radius`` and cannot overlap any wall: it passes from one half to the other
    only through the door. Images show the floor (light grey), the walls (dark grey) and the
    agent (red disc); the goal image is the agent drawn at the goal.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: a displacement in units of ``max_step`` (0.04); vectors longer
    than 1 are scaled to length 1. The move is made in 4 sub-steps; in each, the x then the y part
    is cancelled if it would make the agent overlap a wall (so the agent slides along walls).

    ## Observation Space
    ``Dict(pixels=Box(0, 255, (image_size, image_size, 3), uint8), proprio=Box(-inf, inf, (2,), float32))``

    | proprio index | meaning | range |
    |---|---|---|
    | 0, 1 | agent centre x, y | inside the free space of [0, 1]^2 |

    The true state (``info["state"]``, float64 (2,)) is the same position (no velocity).

    ## Rewards
    ``-distance`` (Euclidean, room units) between agent and goal.

    ## Starting State
    Uniform over the free space of a uniformly chosen half of the room.

    ## Goal Sampling
    With probability ``cross_prob`` (0.5) the goal lies in the other half (the agent must go
    through the door), else in the same half; uniform over the free space, at least
    ``min_goal_distance`` (0.3) from the start. A seed passed to ``reset`` fixes (start, goal).

    ## Success
    ``||position - goal|| <= success_threshold = 0.05`` (room units, about 3 pixels at 64x64,
    less than the agent's diameter 0.07): the goal disc and the agent disc mostly overlap.

    ## Episode Truncation
    None inside the env; wmpc's evaluation budget is 50 steps. The longest path (corner, door,
    far corner) is about 1.2, i.e. 30 steps at full speed; ``oracle_action`` goes through the door.

    ## Arguments
    ``image_size`` (64; 224 for the DINO-WM protocol), ``action_repeat`` (1), ``max_step`` (0.04),
    ``door_center`` (0.45), ``door_width`` (0.16), ``wall_width`` (0.04), ``agent_radius``
    (0.035), ``border`` (0.05), ``cross_prob`` (0.5), ``min_goal_distance`` (0.3).

    ``variation`` ("none"; "train", "test" or a dict of factor ranges: see :mod:`envs.variation`).

    ## Factors of variation
    Drawn at each reset from the seed when ``variation`` is not "none" (``info["factors"]``);
    colours in [0, 1], lengths in room units. The door moves the wall's gap (dynamics and the
    oracle follow; the success rule does not change). The distractor is a disc drawn on the floor
    under the agent (no collision), absent when its radius is 0.

    | factor | kind | train | test |
    |---|---|---|---|
    | agent_rgb | rgb | reds | blues |
    | floor_rgb | rgb | light greys | sand |
    | wall_rgb | rgb | dark greys | dark greens |
    | door_center | uniform | 0.3..0.6 | 0.65..0.75 |
    | door_width | uniform | 0.14..0.22 | 0.10..0.13 |
    | distractor_size | uniform | 0 (none) | 0.05..0.09 (radius) |
    | distractor_rgb, distractor_x, distractor_y | rgb, uniform | greens, 0.1..0.9 | same |

    ## Version History
    * v0: initial version.
    """

    success_threshold = 0.05
    FACTORS = {
        "agent_rgb": Factor("rgb", [[0.75, 0.1, 0.1], [0.95, 0.35, 0.35]], [[0.1, 0.3, 0.75], [0.3, 0.5, 0.95]]),
        "floor_rgb": Factor("rgb", [[0.8, 0.8, 0.8], [1.0, 1.0, 1.0]], [[0.85, 0.75, 0.5], [1.0, 0.9, 0.65]]),
        "wall_rgb": Factor("rgb", [[0.05, 0.05, 0.05], [0.3, 0.3, 0.3]], [[0.1, 0.25, 0.05], [0.25, 0.45, 0.2]]),
        "door_center": Factor("uniform", [0.3, 0.6], [0.65, 0.75]),
        "door_width": Factor("uniform", [0.14, 0.22], [0.10, 0.13]),
        "distractor_size": Factor("uniform", [0.0, 0.0], [0.05, 0.09]),
        "distractor_rgb": Factor("rgb", [[0.1, 0.5, 0.1], [0.4, 0.8, 0.4]], [[0.1, 0.5, 0.1], [0.4, 0.8, 0.4]]),
        "distractor_x": Factor("uniform", [0.1, 0.9], [0.1, 0.9]),
        "distractor_y": Factor("uniform", [0.1, 0.9], [0.1, 0.9]),
    }
    _SUBSTEPS = 4

    def __init__(self, image_size: int = 64, action_repeat: int = 1, render_mode: str | None = "rgb_array",
                 max_step: float = 0.04, door_center: float = 0.45, door_width: float = 0.16,
                 wall_width: float = 0.04, agent_radius: float = 0.035, border: float = 0.05,
                 cross_prob: float = 0.5, min_goal_distance: float = 0.3, variation: str | dict | None = "none"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode,
                         variation=variation)
        if door_width <= 2 * agent_radius:
            raise ValueError(f"door_width ({door_width}) must exceed the agent's diameter "
                             f"({2 * agent_radius}), else the halves are not connected")
        lo, hi = door_center - door_width / 2, door_center + door_width / 2
        if not (border < lo and hi < 1 - border):
            raise ValueError(f"the door [{lo:.3f}, {hi:.3f}] must lie inside the room "
                             f"[{border}, {1 - border}]; move door_center or shrink door_width")
        if not 0 < max_step <= 0.5 or not 0 <= cross_prob <= 1 or not 0 <= min_goal_distance < 0.5:
            raise ValueError("expected 0 < max_step <= 0.5, 0 <= cross_prob <= 1 and "
                             f"0 <= min_goal_distance < 0.5; got {max_step}, {cross_prob}, {min_goal_distance}")
        self.max_step, self.radius, self.border = float(max_step), float(agent_radius), float(border)
        self.cross_prob, self.min_goal_distance = float(cross_prob), float(min_goal_distance)
        self.door = (float(lo), float(hi))
        self.door_center = float(door_center)
        self.wall_x = (0.5 - wall_width / 2, 0.5 + wall_width / 2)
        # free space of the agent centre in each half: (x_lo, x_hi), shared y range
        r = self.radius
        self._halves = ((border + r, self.wall_x[0] - r), (self.wall_x[1] + r, 1 - border - r))
        self._y_range = (border + r, 1 - border - r)
        self._pos = np.full(2, 0.25)
        self._default_door = (self.door, self.door_center)
        self._floor, self._wall, self._agent = _FLOOR, _WALL, _AGENT
        self._distractor: tuple | None = None  # (x, y, radius, colour) of a disc drawn on the floor
        # pixel-centre coordinates in room units: column -> x, row -> y (row 0 at the top)
        s = self.image_size
        self._px = (np.arange(s) + 0.5) / s
        self._py = 1.0 - (np.arange(s) + 0.5) / s
        self._redraw()
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            "proprio": spaces.Box(-np.inf, np.inf, (2,), np.float32)})

    # --- geometry ---------------------------------------------------------------------
    def _collides(self, pos: np.ndarray) -> bool:
        """Whether a disc at ``pos`` overlaps a wall (border walls included)."""
        x, y = pos
        (ylo, yhi), r = self._y_range, self.radius
        if not (self._halves[0][0] <= x <= self._halves[1][1] and ylo <= y <= yhi):
            return True
        # distance from the disc centre to the two wall pieces (below and above the door)
        dx = max(self.wall_x[0] - x, 0.0, x - self.wall_x[1])
        dy_below = max(y - self.door[0], 0.0)
        dy_above = max(self.door[1] - y, 0.0)
        return dx * dx + dy_below * dy_below < r * r or dx * dx + dy_above * dy_above < r * r

    def _side(self, x: float) -> int:
        return int(x > 0.5)

    def _draw_background(self) -> np.ndarray:
        s = self.image_size
        c = (np.arange(s) + 0.5) / s
        x, y = c[None, :], 1.0 - c[:, None]  # (1, s), (s, 1)
        border = (x < self.border) | (x > 1 - self.border) | (y < self.border) | (y > 1 - self.border)
        wall = (x >= self.wall_x[0]) & (x <= self.wall_x[1]) & ((y <= self.door[0]) | (y >= self.door[1]))
        solid = (border | wall)[..., None]  # (s, s, 1)
        image = np.where(solid, self._wall, self._floor).astype(np.float32)
        if self._distractor is not None:  # a disc on the floor only (walls drawn over it)
            dx, dy, radius, colour = self._distractor
            cover = np.clip((radius - np.sqrt((x - dx) ** 2 + (y - dy) ** 2)) * s + 0.5, 0.0, 1.0)[..., None]
            cover = np.where(solid, 0.0, cover)
            image = (image * (1.0 - cover) + colour * cover).astype(np.float32)
        return image

    def _redraw(self) -> None:
        self._background = self._draw_background()  # float32 (S, S, 3)
        self._background_u8 = np.rint(self._background).astype(np.uint8)

    def _apply_factors(self, factors: dict) -> None:
        def colour(name, default):
            return np.float32(255) * np.array(factors[name], np.float32) if name in factors else default

        self._floor, self._wall = colour("floor_rgb", _FLOOR), colour("wall_rgb", _WALL)
        self._agent = colour("agent_rgb", _AGENT)
        (lo, hi), centre = self._default_door
        if "door_center" in factors or "door_width" in factors:
            centre = factors.get("door_center", centre)
            width = factors.get("door_width", hi - lo)
            lo, hi = centre - width / 2, centre + width / 2
            if width <= 2 * self.radius or not (self.border < lo and hi < 1 - self.border):
                raise ValueError(f"the drawn door [{lo:.3f}, {hi:.3f}] does not fit: its width must exceed "
                                 f"{2 * self.radius} and it must lie inside [{self.border}, {1 - self.border}]")
        self.door, self.door_center = (float(lo), float(hi)), float(centre)
        size = factors.get("distractor_size", 0.0)
        self._distractor = None if size <= 0 else (
            factors.get("distractor_x", 0.5), factors.get("distractor_y", 0.5), size,
            colour("distractor_rgb", np.array([60, 160, 60], np.float32)))
        self._redraw()

    # --- hooks ------------------------------------------------------------------------
    def _sample_in(self, rng: np.random.Generator, side: int) -> np.ndarray:
        (xlo, xhi), (ylo, yhi) = self._halves[side], self._y_range
        return np.array([rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)])

    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        side = int(rng.integers(2))
        start = self._sample_in(rng, side)
        goal_side = 1 - side if rng.random() < self.cross_prob else side
        goal = self._sample_in(rng, goal_side)
        while np.linalg.norm(goal - start) < self.min_goal_distance:
            goal = self._sample_in(rng, goal_side)
        return start, goal

    def _set_state(self, state: np.ndarray) -> None:
        if state.shape != (2,):
            raise ValueError(f"Wall state is the agent position of shape (2,), got {state.shape}")
        self._pos = state.astype(np.float64).copy()

    def _get_state(self) -> np.ndarray:
        return self._pos.copy()

    def _apply_action(self, action: np.ndarray) -> None:
        move = action.astype(np.float64) / max(1.0, float(np.linalg.norm(action)))
        move *= self.max_step / self._SUBSTEPS
        pos = self._pos.copy()
        for _ in range(self._SUBSTEPS):
            for axis in (0, 1):
                trial = pos.copy()
                trial[axis] += move[axis]
                if not self._collides(trial):
                    pos = trial
        self._pos = pos

    def _render(self) -> np.ndarray:
        # anti-aliased disc blended over the cached background, only inside its bounding box
        s, (x, y) = self.image_size, self._pos
        image = self._background_u8.copy()
        half = self.radius * s + 1.0  # disc radius plus the one-pixel rim, in pixels
        c0, c1 = max(int(x * s - half), 0), min(int(np.ceil(x * s + half)), s)
        r0, r1 = max(int((1 - y) * s - half), 0), min(int(np.ceil((1 - y) * s + half)), s)
        if c0 >= c1 or r0 >= r1:
            return image
        dist = np.sqrt((self._px[None, c0:c1] - x) ** 2 + (self._py[r0:r1, None] - y) ** 2)  # (h, w)
        cover = np.clip((self.radius - dist) * s + 0.5, 0.0, 1.0)[..., None]  # 1 inside, ramp at the rim
        patch = self._background[r0:r1, c0:c1] * (1.0 - cover) + self._agent * cover
        image[r0:r1, c0:c1] = np.rint(patch).astype(np.uint8)
        return image

    def _proprio(self) -> np.ndarray:
        return self._pos.astype(np.float32)

    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal_state)[:2]))

    # --- public -----------------------------------------------------------------------
    def oracle_action(self) -> np.ndarray:
        """A scripted move toward the goal, through the door when the goal is in the other half.

        Returns:
            float32 (2,) in [-1, 1].
        """
        pos, goal = self._pos, self._goal_state
        target = goal
        if self._side(pos[0]) != self._side(goal[0]):
            direction = 1.0 if goal[0] > pos[0] else -1.0
            margin = 0.01
            lo, hi = self.door[0] + self.radius + margin, self.door[1] - self.radius - margin
            if lo <= pos[1] <= hi:  # in front of or inside the door: go straight across
                target = np.array([0.5 + direction * (0.5 - self.wall_x[0] + self.radius + 0.02), pos[1]])
            else:  # go to the point in front of the door on this side
                target = np.array([0.5 - direction * (0.5 - self.wall_x[0] + self.radius + margin),
                                   self.door_center])
        # each action is repeated action_repeat times: one env step covers up to max_step * action_repeat
        return np.clip((target - pos) / (self.max_step * self.action_repeat), -1.0, 1.0).astype(np.float32)
