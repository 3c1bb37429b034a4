"""PointMass: drive dm_control's planar point mass to a goal position seen as an image.

Physics: dm_control suite ``point_mass`` (the ``easy`` task's model: a 0.3 kg mass on two damped
slide joints in a 0.6 m square arena, force = 0.1 N x action per axis, contacts disabled).
"""
from __future__ import annotations

import numpy as np
from dm_control.suite import point_mass
from gymnasium import spaces

from ._mujoco import ARENA_FACTORS, MujocoGoalEnv, MujocoScene

__all__ = ["PointMassEnv"]


class PointMassEnv(MujocoGoalEnv):
    """Reach a goal position with a point mass in a walled square arena.

    ## Description
    dm_control's ``point_mass`` (easy) physics seen by the top-down ``fixed`` camera, which shows
    the whole arena. The suite's target sphere is hidden; the goal is shown only as the goal image:
    the agent rendered at the goal position. The agent sphere is drawn with radius
    ``agent_radius`` (visual only: contacts are disabled in this model).

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: the motor commands along x and y (force 0.1 N per unit),
    held for ``physics_steps`` physics steps of 0.02 s per env step (``action_repeat`` env steps per
    ``step`` call).

    ## Observation Space
    ``Dict(pixels=Box(0, 255, (image_size, image_size, 3), uint8), proprio=Box(-inf, inf, (4,), float32))``

    | proprio index | meaning | unit |
    |---|---|---|
    | 0, 1 | position x, y | m (joint range -0.29..0.29) |
    | 2, 3 | velocity x, y | m/s |

    The true state (``info["state"]``, float64 (4,)) is qpos + qvel, the same quantities.

    ## Rewards
    ``-distance`` (m) between the agent's and the goal's positions.

    ## Starting State
    Position uniform in ``[-0.25, 0.25]^2``, zero velocity.

    ## Goal Sampling
    Goal position uniform in ``[-0.25, 0.25]^2`` at least ``min_goal_distance`` from the start,
    zero velocity; both drawn from the generator seeded by ``reset(seed=...)``, so a seed fixes
    ``(start, goal)``.

    ## Success
    Euclidean distance between agent and goal positions ``<= success_threshold = 0.03`` m
    (velocity ignored). 0.03 m is 5 % of the arena side, about 3 pixels at 64x64, slightly larger
    than dm_control's own target (radius 0.015 m plus the mass radius 0.01 m): reachable by
    planning from images yet far from chance (a random policy rarely comes that close).

    ## Episode Truncation
    None inside the env (``terminated`` and ``truncated`` stay False); wmpc's evaluation
    budget is 50 steps, within which ``oracle_action`` reaches every sampled goal.

    ## Arguments
    ``image_size`` (64; 224 for the DINO-WM protocol), ``action_repeat`` (1), ``physics_steps``
    (10: 0.2 s of simulated time per env step, so the arena can be crossed in 50 steps; the
    mass's top speed is 0.1 m/s), ``min_goal_distance`` (0.1 m), ``agent_radius`` (0.025 m),
    ``antialias`` (True: 4x multisampling; False renders about 3x faster without a GPU).

    ``variation`` ("none"; "train", "test" or a dict of factor ranges: see :mod:`envs.variation`).

    ## Factors of variation
    ``FACTORS`` (dm_control arena, :data:`envs._mujoco.ARENA_FACTORS`), drawn at each reset from
    the seed when ``variation`` is not "none" (``info["factors"]``); all visual, the dynamics and
    the success rule never change. Colours tint the materials in [0, 1].

    :data:`envs._mujoco.ARENA_FACTORS` (shared with reacher; its table is in that module): agent,
    wall and floor colours, floor texture, light, and a distractor disc; ``agent_rgb`` tints the ball.

    ## Version History
    * v0: initial version.
    """

    FACTORS = ARENA_FACTORS
    success_threshold = 0.03
    _LIMIT = 0.25

    def __init__(self, image_size: int = 64, action_repeat: int = 1, render_mode: str | None = "rgb_array",
                 physics_steps: int = 10, min_goal_distance: float = 0.1, agent_radius: float = 0.025,
                 antialias: bool = True, variation: str | dict | None = "none"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode,
                         variation=variation)
        self._set_stepping(physics_steps, min_goal_distance, 0.5, "m")
        xml, assets = point_mass.get_model_and_assets()
        self._scene = MujocoScene(xml, assets, self.image_size, camera="fixed", hide_geoms=("target",),
                                  antialias=antialias,
                                  geom_radius={"pointmass": float(agent_radius)})
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            "proprio": spaces.Box(-np.inf, np.inf, (4,), np.float32)})

    # --- hooks ------------------------------------------------------------------------
    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start = rng.uniform(-self._LIMIT, self._LIMIT, 2)
        goal = rng.uniform(-self._LIMIT, self._LIMIT, 2)
        while np.linalg.norm(goal - start) < self.min_goal_distance:
            goal = rng.uniform(-self._LIMIT, self._LIMIT, 2)
        zeros = np.zeros(2)
        return np.concatenate([start, zeros]), np.concatenate([goal, zeros])

    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal_state)[:2]))

    # --- public -----------------------------------------------------------------------
    def oracle_action(self) -> np.ndarray:
        """A PD controller toward the goal position (float32 (2,), clipped to [-1, 1])."""
        state = self._get_state()
        error = self._goal_state[:2] - state[:2]
        return np.clip(60.0 * error - 3.0 * state[2:], -1.0, 1.0).astype(np.float32)
