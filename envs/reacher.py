"""Reacher: bring dm_control's two-link planar arm to a goal joint configuration seen as an image.

Physics: dm_control suite ``reacher`` (the ``easy`` task's model: shoulder hinge without limits,
wrist hinge limited to +-160 degrees, torque = 0.05 N m x action per joint, contacts disabled).
"""
from __future__ import annotations

import numpy as np
from dm_control.suite import reacher
from gymnasium import spaces

from ._mujoco import ARENA_FACTORS, MujocoGoalEnv, MujocoScene

__all__ = ["ReacherEnv", "joint_error"]

_WRIST_LIMIT = 2.6  # rad; sampled wrist angles stay inside the joint's +-2.79 rad range


def joint_error(state: np.ndarray, goal_state: np.ndarray) -> np.ndarray:
    """Goal minus state joint angles, the shoulder wrapped to (-pi, pi] (the wrist is limited).

    Args:
        state, goal_state: float (..., >=2) arrays whose first two entries are the joint angles.

    Returns:
        float64 (..., 2).
    """
    diff = np.asarray(goal_state, dtype=np.float64)[..., :2] - np.asarray(state, dtype=np.float64)[..., :2]
    shoulder = np.pi - np.mod(np.pi - diff[..., 0], 2 * np.pi)
    return np.stack([shoulder, diff[..., 1]], axis=-1)


class ReacherEnv(MujocoGoalEnv):
    """Reach a goal configuration of a two-link planar arm.

    ## Description
    dm_control's ``reacher`` (easy) physics seen by its top-down ``fixed`` camera. The suite's
    target sphere is hidden: the goal is a joint configuration (shoulder, wrist), shown as the
    image of the arm in that configuration at rest.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: shoulder and wrist torques (0.05 N m per unit), held for
    ``physics_steps`` physics steps of 0.02 s per env step.

    ## Observation Space
    ``Dict(pixels=Box(0, 255, (image_size, image_size, 3), uint8), proprio=Box(-inf, inf, (4,), float32))``

    | proprio index | meaning | unit |
    |---|---|---|
    | 0 | shoulder angle (unwrapped, as simulated) | rad |
    | 1 | wrist angle (-2.79..2.79) | rad |
    | 2, 3 | shoulder, wrist angular velocity | rad/s |

    The true state (``info["state"]``, float64 (4,)) is qpos + qvel, the same quantities.

    ## Rewards
    ``-distance``: the joint-space distance defined under Success.

    ## Starting State
    Shoulder uniform in ``[-pi, pi)``, wrist uniform in ``[-2.6, 2.6]`` rad, zero velocity.

    ## Goal Sampling
    A configuration drawn like the start, at least ``min_goal_distance`` (rad, joint-space
    distance) from it, at rest; a seed passed to ``reset`` fixes ``(start, goal)``.

    ## Success
    Joint-space distance ``||(wrap(shoulder_goal - shoulder), wrist_goal - wrist)||_2 <=
    success_threshold = 0.15`` rad (velocities ignored). The goal is a configuration, not a
    fingertip point: the two arm poses reaching the same point look different in the image, so
    the joint distance is the one the goal image pins down. 0.15 rad moves the fingertip by at
    most 0.033 m (arm length 0.22 m), about 3 pixels at 64x64.

    ## Episode Truncation
    None inside the env; wmpc's evaluation budget is 50 steps, within which ``oracle_action``
    reaches every sampled goal.

    ## Arguments
    ``image_size`` (64; 224 for the DINO-WM protocol), ``action_repeat`` (1), ``physics_steps``
    (2: 0.04 s per env step), ``min_goal_distance`` (0.5 rad), ``antialias`` (True: 4x
    multisampling; False renders about 3x faster without a GPU).

    ``variation`` ("none"; "train", "test" or a dict of factor ranges: see :mod:`envs.variation`).

    ## Factors of variation
    ``FACTORS`` (dm_control arena, :data:`envs._mujoco.ARENA_FACTORS`), drawn at each reset from
    the seed when ``variation`` is not "none" (``info["factors"]``); all visual, the dynamics and
    the success rule never change. Colours tint the materials in [0, 1].

    :data:`envs._mujoco.ARENA_FACTORS` (shared with pointmass; its table is in that module): agent,
    wall and floor colours, floor texture, light, and a distractor disc; ``agent_rgb`` tints the arm
    (the fingertip keeps its colour).

    ## Version History
    * v0: initial version.
    """

    FACTORS = ARENA_FACTORS
    PROPRIO_PERIODS = (2 * np.pi, None, None, None)  # the shoulder turns freely; nothing else wraps
    success_threshold = 0.15

    def __init__(self, image_size: int = 64, action_repeat: int = 1, render_mode: str | None = "rgb_array",
                 physics_steps: int = 2, min_goal_distance: float = 0.5, antialias: bool = True,
                 variation: str | dict | None = "none"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode,
                         variation=variation)
        self._set_stepping(physics_steps, min_goal_distance, 2.5, "rad")
        xml, assets = reacher.get_model_and_assets()
        self._scene = MujocoScene(xml, assets, self.image_size, camera="fixed", hide_geoms=("target",),
                                  antialias=antialias)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            "proprio": spaces.Box(-np.inf, np.inf, (4,), np.float32)})

    # --- hooks ------------------------------------------------------------------------
    @staticmethod
    def _sample_pose(rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-_WRIST_LIMIT, _WRIST_LIMIT)])

    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start = self._sample_pose(rng)
        goal = self._sample_pose(rng)
        while np.linalg.norm(joint_error(start, goal)) < self.min_goal_distance:
            goal = self._sample_pose(rng)
        zeros = np.zeros(2)
        return np.concatenate([start, zeros]), np.concatenate([goal, zeros])

    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        return float(np.linalg.norm(joint_error(state, goal_state)))

    # --- public -----------------------------------------------------------------------
    def oracle_action(self) -> np.ndarray:
        """A PD controller in joint space toward the goal (float32 (2,), clipped to [-1, 1])."""
        state = self._get_state()
        error = joint_error(state, self._goal_state)
        return np.clip(self._KP * error - self._KD * state[2:], -1.0, 1.0).astype(np.float32)

    _KP, _KD = 10.0, 0.3
