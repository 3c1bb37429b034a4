"""PointMaze: drive a force-actuated ball through a maze (``gymnasium-robotics`` MuJoCo model).

The maze model and the ball's dynamics are ``gymnasium_robotics``' ``PointMaze`` (its MJCF, its
``PointEnv.step`` with velocity clipping); this module adds the wmpc goal-reaching contract: a
top-down orthographic render straight at ``image_size``, exact state restore, goals sampled over
the maze grid within a path-length budget, a breadth-first-search waypoint oracle, and DINO-WM's
success test.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import deque

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from ._mujoco import OwnsRenderer, add_disc, new_renderer  # noqa: E402
from .base import GoalEnv  # noqa: E402
from .variation import Factor  # noqa: E402

# gymnasium_robotics prints a notice about its Adroit envs to stderr on import; not used here.
with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    from gymnasium_robotics.envs.maze import maps  # noqa: E402
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv as _PointMazeSim  # noqa: E402

__all__ = ["PointMazeEnv", "MAZES"]

MAZES = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE}  # option maze= -> gymnasium-robotics map
SUCCESS_RADIUS = 0.5  # DINO-WM point_maze: ||xy - goal_xy|| < 0.5 (one maze cell is 1.0)
START_NOISE = 0.25  # gymnasium-robotics position_noise_range: uniform jitter around a cell centre
MAX_SPEED = 5.0  # PointEnv clips each velocity component to [-5, 5]


def _free_cells(maze_map: list[list]) -> list[tuple[int, int]]:
    """(row, col) of every cell that is not a wall (``1``)."""
    return [(i, j) for i, row in enumerate(maze_map) for j, cell in enumerate(row) if cell != 1]


LAYOUTS = ("rot0", "rot90", "rot180", "rot270")  # the layout factor: the maze turned by k x 90 degrees


def _layout(maze_map: list[list], name: str) -> list[list]:
    """``maze_map`` turned counter-clockwise by the quarter turns ``name`` gives (``"rot90"``...)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown maze layout {name!r}; layouts: {', '.join(LAYOUTS)}")
    out = [list(row) for row in maze_map]
    for _ in range(LAYOUTS.index(name)):
        out = [list(row) for row in zip(*out)][::-1]
    return out


def _bfs_next(maze_map: list[list], goal: tuple[int, int]) -> dict[tuple[int, int], tuple[tuple[int, int], int]]:
    """For every free cell: (the neighbour one step closer to ``goal``, path length in cells)."""
    out = {goal: (goal, 0)}
    queue = deque([goal])
    while queue:
        i, j = queue.popleft()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (i + di, j + dj)
            if n not in out and maze_map[n[0]][n[1]] != 1:
                out[n] = ((i, j), out[(i, j)][1] + 1)
                queue.append(n)
    return out


class PointMazeEnv(OwnsRenderer, GoalEnv):
    """Reach a goal position in a maze with a force-actuated ball, seen from above.

    ## Description
    gymnasium-robotics' PointMaze: a ball (MuJoCo, 2 slide joints, timestep 0.01 s, force =
    100 * action, each velocity component clipped to [-5, 5]) in a walled maze of unit cells.
    ``maze="umaze"`` (5x5 cells, D4RL/DINO-WM's U-maze) or ``"medium"`` (8x8).

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: the ball's x and y force, as gymnasium-robotics defines it.
    One env step holds the action for ``substeps`` MuJoCo steps (default 10, i.e. 0.1 s, 10 Hz
    control); ``action_repeat`` repeats env-level steps on top. ``substeps=1`` gives D4RL's raw step.

    ## Observation Space
    ``pixels``: uint8 ``(image_size, image_size, 3)``, an orthographic top-down render of the
    whole maze (x to the right, y up; the gymnasium-robotics target marker is hidden because the
    goal is given as an image). ``proprio``: float32 ``(4,)`` = ``x, y, vx, vy`` (DINO-WM's
    point-maze proprio). The true state ``info["state"]`` is the same four values in float64.

    ## Rewards
    ``-distance`` with ``distance = ||xy - goal_xy||`` (maze units; one cell is 1.0).

    ## Starting State
    A uniformly chosen free cell's centre plus uniform noise in ``[-0.25, 0.25]^2``
    (gymnasium-robotics' ``position_noise_range``), at rest.

    ## Goal Sampling
    Another free cell whose breadth-first-search path from the start cell is between
    ``min_goal_cells`` (default 2, so the goal is never in a neighbouring cell) and
    ``max_goal_cells`` (default 6: every U-maze goal; in the medium maze the limit keeps goals
    reachable within a 50-step budget at 10 Hz) cells long, plus the same noise; the goal
    velocity is zero. ``oracle_action()`` follows the BFS path cell centre by cell centre with a PD law and
    then stops on the goal.

    ## Success
    DINO-WM's point-maze test (``env/pointmaze/point_maze_wrapper.py`` ``eval_state``):
    ``||xy - goal_xy|| < 0.5``; ``success_threshold = 0.5``. (gymnasium-robotics itself uses 0.45.)

    ## Episode Truncation
    Never truncates or terminates by itself; callers choose the budget (50 steps in wmpc evals).

    ## Arguments
    ``image_size`` (64; 224 for DINO-WM), ``action_repeat`` (1), ``maze`` ("umaze" | "medium"),
    ``substeps`` (10), ``min_goal_cells`` (2), ``max_goal_cells`` (6).

    ``variation`` ("none"; "train", "test" or a dict of factor ranges: see :mod:`envs.variation`).

    ## Factors of variation
    Drawn at each reset from the seed when ``variation`` is not "none" (``info["factors"]``).
    Colours in [0, 1]; lengths in maze units. ``layout`` turns the maze by quarter turns (a
    layout the train split never shows): with it the model holds the walls of every layout in
    the split and each reset keeps those of the drawn one (the others lose collision and
    visibility); the start and goal are drawn over the drawn layout's cells, so a layout change
    changes which cells they come from. The distractor is a flat disc on the floor (no collision;
    a wall may hide it).

    | factor | kind | train | test |
    |---|---|---|---|
    | agent_rgb | rgb | the ball: greens | reds |
    | wall_rgb | rgb | browns | blue-greys |
    | floor_rgb | rgb | floor tint: near white | warm |
    | floor_texrepeat | uniform | floor texture repeat x 0.8..1.5 | x 0.2..0.4 |
    | light | uniform | headlight x 0.8..1.1 | x 0.4..0.6 |
    | layout | choice | rot0, rot180 | rot90, rot270 |
    | distractor_size | uniform | 0 (none) | radius 0.2..0.35 |
    | distractor_rgb, distractor_x, distractor_y | rgb, uniform | yellows, -1.5..1.5 | same |

    ## Version History
    * v0: initial version (gymnasium-robotics 1.4 PointMaze model).
    """

    success_threshold = SUCCESS_RADIUS
    FACTORS = {
        "agent_rgb": Factor("rgb", [[0.2, 0.5, 0.2], [0.4, 0.7, 0.4]], [[0.7, 0.1, 0.1], [0.9, 0.3, 0.3]]),
        "wall_rgb": Factor("rgb", [[0.6, 0.4, 0.2], [0.8, 0.6, 0.4]], [[0.3, 0.4, 0.5], [0.45, 0.55, 0.65]]),
        "floor_rgb": Factor("rgb", [[0.8, 0.8, 0.8], [1.0, 1.0, 1.0]], [[0.9, 0.6, 0.4], [1.0, 0.8, 0.6]]),
        "floor_texrepeat": Factor("uniform", [0.8, 1.5], [0.2, 0.4]),
        "light": Factor("uniform", [0.8, 1.1], [0.4, 0.6]),
        "layout": Factor("choice", ["rot0", "rot180"], ["rot90", "rot270"]),
        "distractor_size": Factor("uniform", [0.0, 0.0], [0.2, 0.35]),
        "distractor_rgb": Factor("rgb", [[0.8, 0.8, 0.1], [1.0, 1.0, 0.4]], [[0.8, 0.8, 0.1], [1.0, 1.0, 0.4]]),
        "distractor_x": Factor("uniform", [-1.5, 1.5], [-1.5, 1.5]),
        "distractor_y": Factor("uniform", [-1.5, 1.5], [-1.5, 1.5]),
    }

    def __init__(self, image_size: int = 64, action_repeat: int = 1, maze: str = "umaze", substeps: int = 10,
                 min_goal_cells: int = 2, max_goal_cells: int = 6, render_mode: str | None = "rgb_array",
                 variation: str | dict | None = "none"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode,
                         variation=variation)
        if maze not in MAZES:
            raise ValueError(f"maze must be one of {sorted(MAZES)}, got {maze!r}")
        if int(substeps) < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        if not 1 <= int(min_goal_cells) <= int(max_goal_cells):
            raise ValueError(f"need 1 <= min_goal_cells <= max_goal_cells, got {min_goal_cells}, {max_goal_cells}")
        self.maze = maze
        self.substeps = int(substeps)
        self.min_goal_cells = int(min_goal_cells)
        self.max_goal_cells = int(max_goal_cells)
        self._maze_map = MAZES[maze]
        layouts = self.variation_ranges.get("layout", [])
        self._layouts = {name: _layout(self._maze_map, name) for name in layouts}
        built = self._maze_map
        if self._layouts:  # one model with the walls of every layout; each reset keeps its layout's
            built = [[1 if any(m[i][j] == 1 for m in self._layouts.values()) else cell for j, cell in enumerate(row)]
                     for i, row in enumerate(self._maze_map)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._sim = _PointMazeSim(maze_map=built, render_mode=None, continuing_task=True)
        xml = getattr(self._sim, "tmp_xml_file_path", None)  # gymnasium-robotics leaves the maze's MuJoCo
        if xml:                                               # xml in the temp folder; the model is loaded
            with contextlib.suppress(OSError):
                os.remove(xml)
        self._grid = self._sim.maze
        self.model = self._sim.point_env.model
        self.data = self._sim.point_env.data
        self._render_data = mujoco.MjData(self.model)  # rendering never touches self.data
        self._setup_renderer()
        self._cells = _free_cells(self._maze_map)
        self._paths: dict[tuple[int, int], dict] = {}
        m = self.model
        self._blocks = {(i, j): mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"block_{i}_{j}")
                        for i, row in enumerate(built) for j, cell in enumerate(row) if cell == 1}
        self._agent_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "particle_site")
        self._look = (m.geom_rgba.copy(), m.site_rgba.copy(), m.mat_rgba.copy(), m.mat_texrepeat.copy(),
                      m.vis.headlight.diffuse.copy())
        self._discs: list[tuple] = []
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            # the ball stays inside the maze; one step of full force adds < 1 to a clipped speed of 5
            "proprio": spaces.Box(np.array([-self._grid.x_map_center, -self._grid.y_map_center,
                                            -MAX_SPEED - 1, -MAX_SPEED - 1], np.float32),
                                  np.array([self._grid.x_map_center, self._grid.y_map_center,
                                            MAX_SPEED + 1, MAX_SPEED + 1], np.float32)),
        })

    def _setup_renderer(self) -> None:
        m = self.model
        m.site_rgba[self._sim.target_site_id, 3] = 0.0  # goals come as images, not as a marker
        vis = m.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, self.image_size), max(vis.offheight, self.image_size)
        vis.orthographic = 1
        vis.fovy = float(max(self._grid.map_width, self._grid.map_length))  # orthographic: view height
        self._own_renderer(new_renderer(m, self.image_size))
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = (0.0, 0.0, 0.0)
        cam.distance = 10.0
        cam.elevation = -90.0
        cam.azimuth = 90.0
        self._camera = cam

    def _apply_factors(self, factors: dict) -> None:
        m = self.model
        m.geom_rgba[:], m.site_rgba[:], m.mat_rgba[:], m.mat_texrepeat[:], m.vis.headlight.diffuse[:] = self._look
        if "layout" in factors and factors["layout"] in self._layouts:
            name = factors["layout"]
            self._maze_map = self._layouts[name]
            self._cells, self._paths = _free_cells(self._maze_map), {}
            for (i, j), gid in self._blocks.items():
                wall = self._maze_map[i][j] == 1
                m.geom_contype[gid] = m.geom_conaffinity[gid] = int(wall)
                m.geom_rgba[gid, 3] = float(wall)
        if "agent_rgb" in factors:
            m.site_rgba[self._agent_site, :3] = factors["agent_rgb"]
        if "wall_rgb" in factors:
            for gid in self._blocks.values():
                m.geom_rgba[gid, :3] = factors["wall_rgb"]
        floor = m.geom_matid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "ground")]
        if "floor_rgb" in factors:
            m.mat_rgba[floor, :3] = factors["floor_rgb"]
        if "floor_texrepeat" in factors:
            m.mat_texrepeat[floor] = self._look[3][floor] * factors["floor_texrepeat"]
        if "light" in factors:
            m.vis.headlight.diffuse[:] = self._look[4] * factors["light"]
        size = factors.get("distractor_size", 0.0)
        self._discs = [] if size <= 0 else [(factors.get("distractor_x", 0.0), factors.get("distractor_y", 0.0),
                                             size, factors.get("distractor_rgb", (0.9, 0.9, 0.2)), -0.09)]

    # --- simulator layer --------------------------------------------------------------
    def _get_state(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def _set_state(self, state: np.ndarray) -> None:
        """Restore ``[x, y, vx, vy]`` exactly: the rest of MuJoCo's integration state is reset too.

        ``qacc_warmstart``, ``ctrl`` and ``time`` are zeroed so a restored state always continues
        the same way (no hidden solver warm start from an earlier trajectory).
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape not in ((2,), (4,)):
            raise ValueError(f"PointMaze state must be [x, y] or [x, y, vx, vy], got shape {state.shape}")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = state[:2]
        self.data.qvel[:] = state[2:4] if state.shape[0] == 4 else 0.0
        mujoco.mj_forward(self.model, self.data)

    def _apply_action(self, action: np.ndarray) -> None:
        for _ in range(self.substeps):
            self._sim.point_env.step(action)

    def _proprio(self) -> np.ndarray:
        return self._get_state().astype(np.float32)

    def _draw(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, self._camera)
        for disc in self._discs:
            add_disc(self._renderer.scene, *disc)
        return self._renderer.render()

    def _render(self) -> np.ndarray:
        # After mj_step the episode data's body poses lag qpos by one step, so render the state
        # vector through the rendering data instead: obs == render_state(state), exactly.
        return self.render_state(self._get_state())

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """Image of an arbitrary state, rendered from a separate ``MjData`` (the episode is untouched)."""
        state = np.asarray(state, dtype=np.float64)
        d = self._render_data
        d.qpos[:] = state[:2]
        d.qvel[:] = state[2:4] if state.shape[0] >= 4 else 0.0
        mujoco.mj_kinematics(self.model, d)
        return self._draw(d).copy()

    # --- task layer -------------------------------------------------------------------
    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        """Euclidean distance of the ball to the goal position (maze units)."""
        return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal_state)[:2]))

    def _cell_xy(self, cell: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._grid.cell_rowcol_to_xy(np.array(cell)), dtype=np.float64)

    def _cell_of(self, xy: np.ndarray) -> tuple[int, int]:
        i, j = self._grid.cell_xy_to_rowcol(np.asarray(xy))
        return int(i), int(j)

    def _path_table(self, goal_cell: tuple[int, int]) -> dict:
        if goal_cell not in self._paths:
            self._paths[goal_cell] = _bfs_next(self._maze_map, goal_cell)
        return self._paths[goal_cell]

    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start_cell = self._cells[rng.integers(len(self._cells))]
        table = self._path_table(start_cell)  # path lengths are symmetric
        goals = [c for c in self._cells if self.min_goal_cells <= table[c][1] <= self.max_goal_cells]
        if not goals:
            raise ValueError(f"no free cell of the {self.maze!r} maze lies {self.min_goal_cells}-{self.max_goal_cells} "
                             f"cells from cell {start_cell}; widen min_goal_cells/max_goal_cells")
        goal_cell = goals[rng.integers(len(goals))]
        start = self._cell_xy(start_cell) + rng.uniform(-START_NOISE, START_NOISE, 2)
        goal = self._cell_xy(goal_cell) + rng.uniform(-START_NOISE, START_NOISE, 2)
        return np.concatenate([start, [0.0, 0.0]]), np.concatenate([goal, [0.0, 0.0]])

    def oracle_action(self, kp: float = 10.0, kd: float = 1.0) -> np.ndarray:
        """Scripted controller: PD toward the next BFS waypoint (cell centres), then the goal.

        Args:
            kp: proportional gain (force units per maze unit).
            kd: derivative gain (force units per maze unit per second).

        Returns:
            float32 (2,) in ``[-1, 1]``.
        """
        if self._goal_state is None:
            raise RuntimeError("call reset() before oracle_action()")
        xy, vel = self.data.qpos.copy(), self.data.qvel.copy()
        goal_xy = self._goal_state[:2]
        cell, goal_cell = self._cell_of(xy), self._cell_of(goal_xy)
        table = self._path_table(goal_cell)
        if cell == goal_cell or cell not in table:
            target = goal_xy
        else:
            target = self._cell_xy(table[cell][0])
        return np.clip(kp * (target - xy) - kd * vel, -1.0, 1.0).astype(np.float32)
