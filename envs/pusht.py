"""Push-T: push a T-shaped block to a goal pose with a round pusher (``gym-pusht`` physics).

The simulation is the maintained ``gym_pusht`` package (pymunk): its ``PushTEnv`` builds the
space and runs its PD-controlled pusher for one 10 Hz control step per simulator step. This
module adds the wmpc goal-reaching contract: relative actions in ``[-1, 1]``, state vectors that
restore exactly, images drawn straight from the state at ``image_size``, reachable goals made by
rolling the simulator forward from the start, and DINO-WM's success test.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from gymnasium import spaces

from .base import GoalEnv
from .variation import Factor

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (imported by gym_pusht) stays headless
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import cv2  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from gym_pusht.envs.pusht import PushTEnv as _PushTSim  # noqa: E402

__all__ = ["PushTEnv"]

BOARD = 512.0  # side of the gym-pusht board, in simulator pixels
AGENT_RADIUS = 15.0  # radius of the gym-pusht pusher
_WALL_INSIDE = 5.0 + 2.0 + AGENT_RADIUS  # nearest pusher centre to the board edge inside the walls (contain_agent)
POSITION_TOLERANCE = 20.0  # DINO-WM: ||(agent_xy, block_xy) - goal|| < 20 px
ANGLE_TOLERANCE = np.pi / 9  # DINO-WM: wrapped block angle error < 20 degrees

_BACKGROUND = (255, 255, 255)
_WALL = (211, 211, 211)  # LightGray, as gym-pusht draws its walls
_BLOCK = (119, 136, 153)  # LightSlateGray
_AGENT = (65, 105, 225)  # RoyalBlue
_SUBPIXEL_BITS = 4  # cv2 fixed-point precision for anti-aliased polygons


def _wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Map angles to ``[-pi, pi)``."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


class PushTEnv(GoalEnv):
    """Push a T-shaped block to a goal pose (agent position and block pose) seen in a goal image.

    ## Description
    A round pusher (radius 15 px) moves on a 512x512 px board with a free T-shaped block
    (gym-pusht physics, pymunk, 10 Hz control with a 100 Hz PD loop). The goal is a full scene:
    pusher position and block pose, as in DINO-WM's Push-T planning evaluation.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: a *relative* target for the pusher (DINO-WM uses relative
    actions). The absolute gym-pusht action is ``clip(agent_xy + action * action_scale, 0, 512)``
    (``action_scale`` px, default 50); with ``action_repeat`` k the action is applied k times, each
    time relative to the pusher's position at that control step.

    | Num | Action                         | Min | Max |
    |-----|--------------------------------|-----|-----|
    | 0   | x offset of the pusher target  | -1  | 1   |
    | 1   | y offset of the pusher target  | -1  | 1   |

    ## Observation Space
    ``pixels``: uint8 ``(image_size, image_size, 3)`` top-down image (row = y, column = x, white
    board, grey T, blue pusher; gym-pusht's fixed green target zone is not drawn because goals
    vary). ``proprio``: float32 ``(4,)`` = pusher ``x, y`` (px) and ``vx, vy`` (px/s).

    The true state (``info["state"]``, float64 ``(10,)``) is ``[agent_x, agent_y, block_x,
    block_y, block_angle, agent_vx, agent_vy, block_vx, block_vy, block_angular_velocity]``; the
    first seven entries follow DINO-WM's Push-T state order.

    ## Rewards
    ``-distance`` with ``distance = max(pos_err / 20, angle_err / (pi / 9))`` where ``pos_err`` is
    the Euclidean norm over ``(agent_xy, block_xy)`` and ``angle_err`` the wrapped block angle
    error; ``distance <= 1`` is success.

    ## Starting State
    ``start="random"`` (default): pusher uniform in ``[50, 450]^2`` px, block in ``[100, 400]^2`` px
    with angle uniform in ``[-pi, pi)`` (gym-pusht's ranges), resampled while the pusher overlaps the
    block; both at rest. ``start="pushing"``: from such a state the scripted push below first brings
    the pusher behind the block; the start is that state (at rest), about to push.

    ## Goal Sampling
    The goal is made by rolling the simulator forward ``goal_steps`` env steps (default 25, each
    ``action_repeat`` control steps) from the start under a scripted pushing controller: the pusher
    goes behind the block along a random direction, then pushes through a random point near the
    block's centre of gravity (so the block shifts and turns). Seeds whose push moves the block
    less than 30 px are resampled. The goal is therefore reachable in ``goal_steps`` steps, half
    the usual 50-step budget. With ``start="pushing"`` the goal is the push itself, ``goal_steps``
    steps after the start: DINO-WM's Push-T protocol takes start and goal 25 control steps apart on
    one pushing trajectory (``start=pushing goal_steps=5`` at ``action_repeat=5``), where the default
    goal lies 125 control steps (approach and push) away. ``oracle_action()`` replays the recorded actions, then holds the
    pusher on the goal position; because ``set_state`` rebuilds the pymunk space, the replay
    reproduces the goal exactly (distance 0 after ``goal_steps`` steps).

    ## Success
    DINO-WM's Push-T test (``env/pusht/pusht_wrapper.py`` ``eval_state``):
    ``||state[:4] - goal[:4]|| < 20`` px and wrapped ``|angle - goal_angle| < pi / 9``.
    ``success_threshold = 1.0`` on the normalised ``distance`` above.

    ## Episode Truncation
    Never truncates or terminates by itself; callers choose the budget (50 steps in wmpc evals).

    ## Arguments
    ``image_size`` (64; 224 for the DINO-WM protocol), ``action_repeat`` (1), ``action_scale`` (50 px
    per unit action), ``goal_steps`` (25), ``variation`` ("none"; "train", "test" or a dict of
    factor ranges: see :mod:`envs.variation`), ``contain_agent`` (False: pusher targets are clipped to
    the board, as in gym-pusht, whose kinematic pusher passes through the walls, so a pusher can end
    half outside the image; True: targets stay inside the walls, 22 px from the edge, and the pusher
    stays whole in view), ``start`` ("random" | "pushing": see Starting State).

    ## Factors of variation
    Drawn at each reset from the seed when ``variation`` is not "none" (``info["factors"]``); all
    visual (gym-pusht's block shape and physics stay as they are, so the goal-making push and the
    success test do not change). Colours in [0, 1]; the distractor is a disc drawn on the board
    under the block and pusher (no collision), in board pixels.

    | factor | kind | train | test |
    |---|---|---|---|
    | agent_rgb | rgb | blues | oranges |
    | object_rgb | rgb | the T: slate greys | brick reds |
    | wall_rgb | rgb | light greys | dark greys |
    | background_rgb | rgb | near white | pale green |
    | distractor_size | uniform | 0 (none) | radius 20..40 px |
    | distractor_rgb, distractor_x, distractor_y | rgb, uniform | purples, 60..452 px | same |

    ## Version History
    * v0: initial version (gym-pusht 0.1.8 physics).
    """

    success_threshold = 1.0
    FACTORS = {
        "agent_rgb": Factor("rgb", [[0.2, 0.35, 0.8], [0.35, 0.5, 0.95]], [[0.85, 0.45, 0.1], [1.0, 0.6, 0.25]]),
        "object_rgb": Factor("rgb", [[0.4, 0.45, 0.5], [0.55, 0.6, 0.7]], [[0.55, 0.2, 0.2], [0.7, 0.35, 0.35]]),
        "wall_rgb": Factor("rgb", [[0.75, 0.75, 0.75], [0.9, 0.9, 0.9]], [[0.3, 0.3, 0.3], [0.45, 0.45, 0.45]]),
        "background_rgb": Factor("rgb", [[0.9, 0.9, 0.9], [1.0, 1.0, 1.0]], [[0.8, 0.9, 0.75], [0.9, 1.0, 0.85]]),
        "distractor_size": Factor("uniform", [0.0, 0.0], [20.0, 40.0]),
        "distractor_rgb": Factor("rgb", [[0.5, 0.2, 0.6], [0.7, 0.4, 0.8]], [[0.5, 0.2, 0.6], [0.7, 0.4, 0.8]]),
        "distractor_x": Factor("uniform", [60.0, 452.0], [60.0, 452.0]),
        "distractor_y": Factor("uniform", [60.0, 452.0], [60.0, 452.0]),
    }

    def __init__(self, image_size: int = 64, action_repeat: int = 1, action_scale: float = 50.0,
                 goal_steps: int = 25, render_mode: str | None = "rgb_array", variation: str | dict | None = "none",
                 contain_agent: bool = False, start: str = "random"):
        super().__init__(image_size=image_size, action_repeat=action_repeat, render_mode=render_mode,
                         variation=variation)
        if not action_scale > 0:
            raise ValueError(f"action_scale must be > 0 px, got {action_scale}")
        if int(goal_steps) < 1:
            raise ValueError(f"goal_steps must be >= 1, got {goal_steps}")
        self.action_scale = float(action_scale)
        self.goal_steps = int(goal_steps)
        if start not in ("random", "pushing"):
            raise ValueError(f"start must be 'random' or 'pushing', got {start!r}")
        self.start = start
        # the pusher's targets stay inside the walls: gym-pusht's pusher is kinematic, so walls do not stop it,
        # and a pusher driven onto the board's edge is half out of the image
        self.contain_agent = bool(contain_agent)
        self._sim = _PushTSim(obs_type="state", render_mode="rgb_array")
        self._sim.reset(seed=0)
        # Block outline in body coordinates, one polygon per rectangle of the T: (2, 4, 2). pymunk keeps
        # a body's shapes in a set, whose order varies between instances: sorted (bar first, then stem)
        # so every instance draws the overlapping anti-aliased edges alike.
        polygons = [[tuple(v) for v in s.get_vertices()] for s in self._sim.block.shapes]
        self._block_local = np.array(sorted(polygons, key=lambda p: min(y for _, y in p)))
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict({
            "pixels": self._pixel_space(),
            # position margin: the PD loop may overshoot a target on the board edge; speed: far above the
            # PD loop's steady state (5 * 512 px/s for a target across the whole board)
            "proprio": spaces.Box(np.array([-BOARD / 4] * 2 + [-1e4] * 2, np.float32),
                                  np.array([BOARD * 1.25] * 2 + [1e4] * 2, np.float32)),
        })
        self._colors = {"background": _BACKGROUND, "wall": _WALL, "object": _BLOCK, "agent": _AGENT}
        self._distractor: tuple | None = None  # (x, y, radius in board px, colour)
        self._background = self._draw_background()
        self._plan: np.ndarray | None = None  # recorded goal-making actions (goal_steps, 2)
        self._steps = 0

    def _draw_background(self) -> np.ndarray:
        """The board with the walls (segments at 5 px from the edge, 2 px radius): uint8 (H, W, 3)."""
        size = self.image_size
        background = np.full((size, size, 3), self._colors["background"], np.uint8)
        if self._distractor is not None:
            x, y, radius, colour = self._distractor
            scale = size / BOARD * (1 << _SUBPIXEL_BITS)
            cv2.circle(background, (int(round(x * scale)), int(round(y * scale))), int(round(radius * scale)),
                       colour, -1, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        inset, last = int(round(5 * size / BOARD)) - 1, size - 1
        cv2.rectangle(background, (inset, inset), (last - inset, last - inset), self._colors["wall"],
                      max(1, round(4 * size / BOARD)))
        return background

    def _apply_factors(self, factors: dict) -> None:
        defaults = {"background": _BACKGROUND, "wall": _WALL, "object": _BLOCK, "agent": _AGENT}
        self._colors = {k: tuple(255.0 * c for c in factors[f"{k}_rgb"]) if f"{k}_rgb" in factors else v
                        for k, v in defaults.items()}
        size = factors.get("distractor_size", 0.0)
        self._distractor = None if size <= 0 else (
            factors.get("distractor_x", BOARD / 2), factors.get("distractor_y", BOARD / 2), size,
            tuple(255.0 * c for c in factors.get("distractor_rgb", (0.6, 0.3, 0.7))))
        self._background = self._draw_background()

    # --- simulator layer --------------------------------------------------------------
    def _get_state(self) -> np.ndarray:
        a, b = self._sim.agent, self._sim.block
        return np.array([*a.position, *b.position, b.angle, *a.velocity, *b.velocity, b.angular_velocity],
                        dtype=np.float64)

    def _set_state(self, state: np.ndarray) -> None:
        """Restore a state exactly: a fresh pymunk space (no contact cache), then the bodies.

        The block's angle is set before its position so that ``block_x, block_y`` is exactly the
        body origin read back by ``_get_state`` (gym-pusht's own ``_set_state`` sets them in the
        other order and then steps the physics, so its restored state differs from its input).
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape not in ((5,), (7,), (10,)):
            raise ValueError(f"PushT state must have 5, 7 or 10 entries (see the class docstring), got {state.shape}")
        full = np.zeros(10)
        full[: state.shape[0]] = state
        self._sim._setup()
        agent, block = self._sim.agent, self._sim.block
        agent.position = (full[0], full[1])
        agent.velocity = (full[5], full[6])
        block.angle = full[4]
        block.position = (full[2], full[3])
        block.velocity = (full[7], full[8])
        block.angular_velocity = full[9]
        self._sim.space.reindex_shapes_for_body(block)
        self._sim.space.reindex_shapes_for_body(agent)

    def _apply_action(self, action: np.ndarray) -> None:
        low = _WALL_INSIDE if self.contain_agent else 0.0
        target = np.clip(np.array(self._sim.agent.position) + action.astype(np.float64) * self.action_scale,
                         low, BOARD - low)
        self._sim.step(target)

    def _proprio(self) -> np.ndarray:
        a = self._sim.agent
        return np.array([*a.position, *a.velocity], dtype=np.float32)

    def _draw(self, state: np.ndarray) -> np.ndarray:
        """Image of a state, drawn with anti-aliased polygons at ``image_size``: uint8 (H, W, 3)."""
        size = self.image_size
        scale = size / BOARD * (1 << _SUBPIXEL_BITS)
        img = self._background.copy()
        c, s = np.cos(state[4]), np.sin(state[4])
        rot = np.array([[c, s], [-s, c]])  # row-vector rotation: p_world = p_local @ rot + origin
        for poly in self._block_local:
            pts = ((poly @ rot + state[2:4]) * scale).round().astype(np.int32)
            cv2.fillPoly(img, [pts], self._colors["object"], lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        centre = tuple(int(v) for v in (state[:2] * scale).round())
        radius = int(round(AGENT_RADIUS * scale))
        cv2.circle(img, centre, radius, self._colors["agent"], -1, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        return img

    def _render(self) -> np.ndarray:
        return self._draw(self._get_state())

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """Image of an arbitrary state; drawn from the vector alone, so the simulation is untouched."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape[0] < 5:
            raise ValueError(f"PushT render_state needs at least 5 state entries, got {state.shape}")
        return self._draw(state)

    # --- task layer -------------------------------------------------------------------
    def goal_distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        """``max(pos_err / 20 px, angle_err / (pi/9))``; success iff ``<= 1`` (DINO-WM's test)."""
        state, goal_state = np.asarray(state), np.asarray(goal_state)
        pos_err = np.linalg.norm(state[:4] - goal_state[:4])
        angle_err = abs(_wrap_angle(state[4] - goal_state[4]))
        return float(max(pos_err / POSITION_TOLERANCE, angle_err / ANGLE_TOLERANCE))

    def _sample_start(self, rng: np.random.Generator) -> np.ndarray:
        while True:
            state = np.array([*rng.uniform(50, 450, 2), *rng.uniform(100, 400, 2), rng.uniform(-np.pi, np.pi)])
            self._set_state(state)
            gap = min(shape.point_query(tuple(state[:2])).distance for shape in self._sim.block.shapes)
            if gap > AGENT_RADIUS + 10:
                return state

    def _push_waypoints(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random push of the block: the point behind it to start from and the point to push through."""
        block = self._sim.block
        cog = np.array(block.local_to_world(block.center_of_gravity))
        heading = rng.uniform(-np.pi, np.pi)
        direction = np.array([np.cos(heading), np.sin(heading)])
        aim = cog + rng.uniform(-25, 25) * np.array([-direction[1], direction[0]])
        behind = np.clip(aim - 110 * direction, 30, BOARD - 30)
        through = np.clip(aim + rng.uniform(60, 140) * direction, 30, BOARD - 30)
        return behind, through

    def _drive(self, waypoints: list, steps: int, rng: np.random.Generator, *, stop_at_last: bool = False
               ) -> np.ndarray:
        """Drive the pusher through ``waypoints`` (each left within 15 px) for ``steps`` env steps, with
        N(0, 0.1) action noise; ``stop_at_last``: stop early once the last waypoint is reached.

        Returns:
            the env actions taken, float32 (n, 2), n <= steps.
        """
        actions, waypoints = [], list(waypoints)
        for _ in range(steps):
            agent = np.array(self._sim.agent.position)
            if np.linalg.norm(agent - waypoints[0]) < 15:
                if len(waypoints) > 1:
                    waypoints.pop(0)
                elif stop_at_last:
                    break
            action = np.clip((waypoints[0] - agent) / self.action_scale + rng.normal(0, 0.1, 2), -1, 1)
            action = action.astype(np.float32)
            for _ in range(self.action_repeat):
                self._apply_action(action)
            actions.append(action)
        return np.stack(actions) if actions else np.zeros((0, 2), np.float32)

    def _sample_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(100):
            start = self._sample_start(rng)
            self._set_state(start)
            behind, through = self._push_waypoints(rng)
            if self.start == "pushing":  # the start is the push's first contact-bound state, at rest
                self._drive([behind], 40, rng, stop_at_last=True)
                start = self._get_state()
                start[5:] = 0.0
                self._set_state(start)
                plan = self._drive([through], self.goal_steps, rng)
            else:
                plan = self._drive([behind, through], self.goal_steps, rng)
            goal = self._get_state()
            if np.linalg.norm(goal[2:4] - start[2:4]) >= 30:
                break
        self._plan, self._steps = plan, 0
        return start, goal

    # --- gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._steps = 0
        if options and ("start_state" in options or "goal_state" in options):
            self._plan = None  # the recorded push no longer leads to this goal
        return obs, info

    def step(self, action):
        out = super().step(action)
        self._steps += 1
        return out

    def oracle_action(self) -> np.ndarray:
        """The next action of the recorded goal-making push, then a hold on the goal pusher position.

        The replay is exact only while every step of the episode so far came from this method;
        after a custom ``goal_state``/``start_state`` the oracle only drives the pusher to the
        goal's pusher position.

        Returns:
            float32 (2,) in ``[-1, 1]``.
        """
        if self._goal_state is None:
            raise RuntimeError("call reset() before oracle_action()")
        if self._plan is not None and self._steps < len(self._plan):
            return self._plan[self._steps].copy()
        agent = np.array(self._sim.agent.position)
        return np.clip((self._goal_state[:2] - agent) / self.action_scale, -1, 1).astype(np.float32)
