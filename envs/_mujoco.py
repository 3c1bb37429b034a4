"""Fast offscreen rendering for MuJoCo-based wmpc envs.

A :class:`MujocoScene` owns an ``MjModel`` loaded from XML, the episode's ``MjData`` and a second
``MjData`` used only to render arbitrary states, so rendering a goal never touches the running
simulation. Shadows, reflections, skybox and fog are switched off (about 2 ms per 64x64 frame
with ``MUJOCO_GL=egl`` instead of about 20 ms with MuJoCo's defaults).
"""
from __future__ import annotations

import atexit
import weakref

import mujoco
import numpy as np

from .base import GoalEnv
from .variation import Factor

__all__ = ["MujocoScene", "MujocoGoalEnv", "OwnsRenderer", "free_renderer", "new_renderer", "ARENA_FACTORS",
           "add_disc"]

# Factors of the dm_control arena (pointmass, reacher: a 0.6 m square, camera "fixed" above it).
# Colours tint the materials (agent "self", walls "decoration", floor "grid"); light scales the
# diffuse light of the scene light and the headlight; floor_texrepeat repeats the floor's grid
# texture; the distractor is a flat disc on the floor (visual only, drawn under the agent).
# The factors of variation of the dm_control arena envs (pointmass, reacher):
#
# | factor | kind | train | test |
# |---|---|---|---|
# | agent_rgb | rgb | the agent (material ``self``): browns | greens |
# | wall_rgb | rgb | arena walls: blues | purples |
# | floor_rgb | rgb | floor grid tint: near white | warm |
# | floor_texrepeat | uniform | grid texture repeat x 0.8..1.5 | x 3..5 |
# | light | uniform | diffuse light x 0.7..1.1 | x 0.3..0.5 |
# | distractor_size | uniform | 0 (none) | a flat disc on the floor, radius 0.02..0.04 m |
# | distractor_rgb, distractor_x, distractor_y | rgb, uniform | yellows, -0.25..0.25 m | same |
ARENA_FACTORS = {
    "agent_rgb": Factor("rgb", [[0.6, 0.4, 0.2], [0.8, 0.6, 0.4]], [[0.2, 0.6, 0.2], [0.4, 0.8, 0.4]]),
    "wall_rgb": Factor("rgb", [[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]], [[0.6, 0.2, 0.5], [0.8, 0.4, 0.7]]),
    "floor_rgb": Factor("rgb", [[0.8, 0.8, 0.8], [1.0, 1.0, 1.0]], [[0.9, 0.6, 0.4], [1.0, 0.8, 0.6]]),
    "floor_texrepeat": Factor("uniform", [0.8, 1.5], [3.0, 5.0]),
    "light": Factor("uniform", [0.7, 1.1], [0.3, 0.5]),
    "distractor_size": Factor("uniform", [0.0, 0.0], [0.02, 0.04]),
    "distractor_rgb": Factor("rgb", [[0.8, 0.8, 0.1], [1.0, 1.0, 0.4]], [[0.8, 0.8, 0.1], [1.0, 1.0, 0.4]]),
    "distractor_x": Factor("uniform", [-0.25, 0.25], [-0.25, 0.25]),
    "distractor_y": Factor("uniform", [-0.25, 0.25], [-0.25, 0.25]),
}


def add_disc(scene, x: float, y: float, radius: float, rgb, z: float = 0.001) -> None:
    """Append a flat visual-only disc to an ``MjvScene`` after ``update_scene`` (no physics)."""
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_CYLINDER,
                        np.array([radius, 0.0005, 0.0]), np.array([x, y, z]), np.eye(3).ravel(),
                        np.array([*rgb, 1.0], np.float32))
    scene.ngeom += 1

_LIVE: "weakref.WeakSet[OwnsRenderer]" = weakref.WeakSet()

_FLAGS_OFF = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
              mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG)


_ATEXIT_REGISTERED = False


def free_renderer(renderer) -> None:
    """Close a ``mujoco.Renderer`` (None is fine) with its own GL context current.

    MjrContext.free() deletes GL objects in whichever context is current: making the renderer's
    own context current first keeps another env's framebuffer with the same ids alive.
    """
    if renderer is None:
        return
    gl_context = getattr(renderer, "_gl_context", None)
    if gl_context is not None:
        gl_context.make_current()
    renderer.close()


def _close_all() -> None:
    # GL contexts must be freed before MuJoCo's own exit hook terminates the EGL display;
    # registered after the first renderer exists, so it runs before that hook (LIFO).
    for owner in list(_LIVE):
        owner.close()


class OwnsRenderer:
    """Mixin for objects holding a ``mujoco.Renderer`` in ``self._renderer``: frees its GL context
    on :meth:`close`, on garbage collection and at interpreter exit (before MuJoCo's own hook)."""

    _renderer = None

    def _own_renderer(self, renderer) -> None:
        global _ATEXIT_REGISTERED
        self._renderer = renderer
        _LIVE.add(self)
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_all)
            _ATEXIT_REGISTERED = True

    def close(self) -> None:
        """Free the GL context (safe to call twice)."""
        renderer, self._renderer = getattr(self, "_renderer", None), None
        free_renderer(renderer)
        _LIVE.discard(self)

    def __del__(self) -> None:
        self.close()


def new_renderer(model, image_size: int):
    """A square offscreen ``mujoco.Renderer`` with shadows, reflections, skybox and fog off
    (software rendering is ~8x faster without them)."""
    renderer = mujoco.Renderer(model, image_size, image_size)
    for flag in _FLAGS_OFF:
        renderer.scene.flags[flag] = 0
    return renderer


class MujocoScene(OwnsRenderer):
    """A MuJoCo model, its episode data and a fast square offscreen renderer.

    Args:
        xml: the MJCF text.
        assets: the files the MJCF includes (``{name: bytes}``), as dm_control's
            ``get_model_and_assets()`` returns them.
        image_size: side of the square images, in pixels.
        camera: name of the camera to render from.
        hide_geoms: names of geoms made invisible (alpha 0), e.g. a task's target marker.
        geom_radius: ``{geom name: radius}`` changes of sphere sizes (visual only when contacts
            are disabled in the model).
        antialias: 4x multisampling (MuJoCo's default). Off, frames are aliased but software
            rendering (llvmpipe, no GPU) is about 3x faster.
    """

    def __init__(self, xml: str, assets: dict, image_size: int, camera: str,
                 hide_geoms: tuple[str, ...] = (), geom_radius: dict[str, float] | None = None,
                 antialias: bool = True):
        self.model = mujoco.MjModel.from_xml_string(xml, assets)
        self.data = mujoco.MjData(self.model)
        self._render_data = mujoco.MjData(self.model)
        for name in hide_geoms:
            self.model.geom_rgba[self._geom_id(name), 3] = 0.0
        for name, radius in (geom_radius or {}).items():
            self.model.geom_size[self._geom_id(name), 0] = radius
        self.model.vis.quality.offsamples = 4 if antialias else 0
        vis = self.model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, image_size), max(vis.offheight, image_size)
        self._camera = camera
        self._own_renderer(new_renderer(self.model, image_size))
        m = self.model
        self._look = (m.mat_rgba.copy(), m.mat_texrepeat.copy(), m.light_diffuse.copy(),
                      m.vis.headlight.diffuse.copy())
        self.discs: list[tuple] = []  # (x, y, radius, rgb): visual-only discs drawn on the floor

    def restore_look(self) -> None:
        """Undo :meth:`set_look`: materials, textures, lights as loaded; no discs."""
        m = self.model
        m.mat_rgba[:], m.mat_texrepeat[:], m.light_diffuse[:], m.vis.headlight.diffuse[:] = self._look
        self.discs = []

    def set_look(self, materials: dict[str, object] | None = None, light: float | None = None,
                 texrepeat: dict[str, float] | None = None) -> None:
        """Tint materials (``{name: rgb}``), scale the diffuse lights, scale texture repeats."""
        m = self.model
        for name, rgb in (materials or {}).items():
            m.mat_rgba[self._id(mujoco.mjtObj.mjOBJ_MATERIAL, name), :3] = rgb
        for name, scale in (texrepeat or {}).items():
            mid = self._id(mujoco.mjtObj.mjOBJ_MATERIAL, name)
            m.mat_texrepeat[mid] = self._look[1][mid] * scale
        if light is not None:
            m.light_diffuse[:] = self._look[2] * light
            m.vis.headlight.diffuse[:] = self._look[3] * light

    def _id(self, kind, name: str) -> int:
        i = mujoco.mj_name2id(self.model, kind, name)
        if i < 0:
            raise ValueError(f"the model has no {kind.name[6:].lower()} named {name!r}")
        return i

    def _geom_id(self, name: str) -> int:
        gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
        if gid < 0:
            raise ValueError(f"the model has no geom named {name!r}")
        return gid

    def set_qpos_qvel(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set the episode state and recompute positions (warm start cleared: reproducible)."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def step(self, ctrl: np.ndarray, n: int) -> None:
        """Hold ``ctrl`` for ``n`` physics steps, then recompute positions for rendering."""
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n)
        mujoco.mj_forward(self.model, self.data)

    def render(self, qpos: np.ndarray | None = None) -> np.ndarray:
        """Render the episode state, or the configuration ``qpos`` (episode left untouched).

        Returns:
            uint8 (H, W, 3), a fresh array.
        """
        data = self.data
        if qpos is not None:
            data = self._render_data
            data.qpos[:] = qpos
            data.qvel[:] = 0.0
            mujoco.mj_forward(self.model, data)
        self._renderer.update_scene(data, camera=self._camera)
        for disc in self.discs:
            add_disc(self._renderer.scene, *disc)
        return self._renderer.render()


class MujocoGoalEnv(GoalEnv):
    """GoalEnv hooks for a :class:`MujocoScene` whose state is ``qpos + qvel`` of 2 joints each.

    Subclasses build ``self._scene`` and set ``physics_steps``; they add goal sampling, the
    success distance and the oracle. ``_MATERIALS`` maps colour factors to the materials they tint.
    """

    _MATERIALS = {"agent_rgb": ("self",), "wall_rgb": ("decoration",), "floor_rgb": ("grid",)}

    def _set_stepping(self, physics_steps: int, min_goal_distance: float, limit: float, unit: str) -> None:
        """Check and set ``physics_steps`` (>= 1) and ``min_goal_distance`` (in ``[0, limit)``)."""
        if int(physics_steps) < 1:
            raise ValueError(f"physics_steps must be >= 1, got {physics_steps}")
        if not 0 <= min_goal_distance < limit:
            raise ValueError(f"min_goal_distance must lie in [0, {limit}) {unit}, got {min_goal_distance}")
        self.physics_steps = int(physics_steps)
        self.min_goal_distance = float(min_goal_distance)

    def _apply_factors(self, factors: dict) -> None:
        scene = self._scene
        scene.restore_look()
        materials = {mat: factors[f] for f, mats in self._MATERIALS.items() if f in factors for mat in mats}
        texrepeat = {"grid": factors["floor_texrepeat"]} if "floor_texrepeat" in factors else None
        scene.set_look(materials, factors.get("light"), texrepeat)
        if factors.get("distractor_size", 0.0) > 0:
            scene.discs = [(factors.get("distractor_x", 0.0), factors.get("distractor_y", 0.0),
                            factors["distractor_size"], factors.get("distractor_rgb", (0.9, 0.9, 0.2)))]

    def _set_state(self, state: np.ndarray) -> None:
        if state.shape != (4,):
            raise ValueError(f"{type(self).__name__} state is qpos + qvel of shape (4,), got {state.shape}")
        self._scene.set_qpos_qvel(state[:2], state[2:])

    def _get_state(self) -> np.ndarray:
        return np.concatenate([self._scene.data.qpos, self._scene.data.qvel])

    def _apply_action(self, action: np.ndarray) -> None:
        self._scene.step(action, self.physics_steps)

    def _render(self) -> np.ndarray:
        return self._scene.render()

    def _proprio(self) -> np.ndarray:
        return self._get_state().astype(np.float32)

    def render_state(self, state: np.ndarray) -> np.ndarray:
        """Render ``state`` (4,) on a separate MjData: the episode is not touched.

        Returns:
            uint8 (image_size, image_size, 3).
        """
        return self._scene.render(qpos=np.asarray(state, dtype=np.float64)[:2])

    def close(self) -> None:
        self._scene.close()

