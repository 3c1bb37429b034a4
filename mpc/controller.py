"""The receding-horizon controller and the one-call ``plan(obs, goal_image)`` API.

``MPCController.act`` encodes the current observation and the goal (once per replan, never inside
the planner's loop), keeps the last ``num_hist`` context frames and the actions executed between
them, asks the planner for the action sequence whose predicted tokens land closest to the goal's,
executes ``replan_every`` model steps of it, then replans warm-started from the shifted plan.

Model steps and env steps: a world model trained with ``frameskip = k`` takes one action of size
``k * A`` per model step (the k env actions in between, concatenated, as DINO-WM does). The
controller hides this: ``act`` returns one env action (A,) at a time and :func:`plan` returns
``(H * k, A)`` env actions.

What the model's checkpoint knows of its task (:class:`mpc.checkpoint.TaskInfo`) fills in what the
caller leaves out: the action bounds when no ``action_space`` is given, and the image size every
observation and goal image must have. A model without proprioception (``proprio_dim = 0``) plans
from images alone; an objective with a goal-proprio term (``alpha > 0``) needs ``goal_proprio``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from .objectives import latent_distance, make_objective
from .planners import make_planner

__all__ = ["MPCController", "plan"]

log = logging.getLogger(__name__)


def _check_image_batch(images, what: str) -> np.ndarray | torch.Tensor:
    """Check a uint8 (H, W, 3) / (B, H, W, 3) image (or batch) and return it batched."""
    if isinstance(images, torch.Tensor):
        arr = images
    else:
        arr = np.asarray(images)
    if arr.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"{what} must be a uint8 image (H, W, 3) or batch (B, H, W, 3) as envs and "
                         f"cameras give; got dtype {arr.dtype}. Convert float images with (x * 255).astype(np.uint8)")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3) or (B, H, W, 3); got {tuple(arr.shape)}")
    return arr


def _split_obs(obs) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """obs (dict with pixels/proprio, or an image) -> (pixels (B,H,W,3), proprio (B,P) | None, batched)."""
    if isinstance(obs, dict):
        if "pixels" not in obs:
            raise ValueError("an observation dict must hold 'pixels' (uint8 (H, W, 3)) and 'proprio'")
        pixels = obs["pixels"]
        proprio = obs.get("proprio")
    else:
        pixels, proprio = obs, None
    batched = np.ndim(pixels) == 4
    pixels = _check_image_batch(pixels, "the observation image")
    if proprio is not None:
        proprio = np.asarray(proprio, dtype=np.float32)
        proprio = proprio[None] if proprio.ndim == 1 else proprio
        if proprio.ndim != 2 or proprio.shape[0] != pixels.shape[0]:
            raise ValueError(f"proprio must be (P,) or (B, P) matching {pixels.shape[0]} image(s); got {proprio.shape}")
        if not np.all(np.isfinite(proprio)):
            raise ValueError("proprio contains NaN or inf")
    return pixels, proprio, batched


def _check_image_size(model, pixels, what: str) -> None:
    """Raise when ``pixels`` (B, H, W, 3) are not the size the model was trained on (when it is known)."""
    size = getattr(model, "image_size", None)
    if size is not None and tuple(pixels.shape[1:3]) != (size, size):
        raise ValueError(f"{what} is {pixels.shape[1]}x{pixels.shape[2]} but this world model was trained "
                         f"on {size}x{size} images; make the env with image_size={size} (or resize the "
                         "camera's images to that size)")


def _model_action_space(model, action_space: spaces.Box | None) -> spaces.Box:
    """The planner's Box over model actions (k env actions concatenated)."""
    k = int(model.frameskip)
    if action_space is None:
        low = getattr(model, "action_low", None)
        high = getattr(model, "action_high", None)
        if low is None or high is None:
            log.warning("the world model stores no action bounds (a checkpoint without a task "
                        "record?); planning in [-1, 1]. Pass action_space=env.action_space")
            low, high = -np.ones(model.action_dim // k), np.ones(model.action_dim // k)
        low, high = np.asarray(low, np.float32).reshape(-1), np.asarray(high, np.float32).reshape(-1)
    else:
        if not (hasattr(action_space, "low") and hasattr(action_space, "high")):
            raise ValueError(f"action_space must be a continuous gymnasium Box (low/high bounds); got "
                             f"{type(action_space).__name__}: wmpc plans continuous actions")
        low, high = np.asarray(action_space.low, np.float32).reshape(-1), np.asarray(action_space.high, np.float32).reshape(-1)
    if low.size * k != model.action_dim:
        raise ValueError(f"the action space has {low.size} dims but the model was trained on "
                         f"{model.action_dim // k}-dim actions (frameskip {k}); pass the env's action_space")
    return spaces.Box(np.tile(low, k), np.tile(high, k), dtype=np.float32)


def check_action_bound(value, name: str = "action_bound") -> float:
    """``value`` as a float in (0, 1], the fraction of the action box a planner searches.

    Raises:
        ValueError: anything else (0, negative, above 1, NaN, a bool, not a number), named ``name``.
    """
    try:
        bound = float(value)
    except (TypeError, ValueError):
        bound = float("nan")
    if isinstance(value, bool) or not 0 < bound <= 1:  # NaN fails too
        raise ValueError(f"{name} is the fraction of the action box the planner searches: a number in (0, 1], "
                         f"got {value!r}")
    return bound


def _shrink(box: spaces.Box, fraction: float) -> spaces.Box:
    """``box`` shrunk about its centre to ``fraction`` of its extent along every dim."""
    if fraction == 1.0:
        return box
    centre, half = (box.high + box.low) / 2, (box.high - box.low) / 2 * fraction
    return spaces.Box((centre - half).astype(np.float32), (centre + half).astype(np.float32), dtype=np.float32)


def planning_box(model, action_space: spaces.Box | None, action_bound: float = 1.0) -> spaces.Box:
    """The Box a planner searches: the model's action space (``action_space`` tiled over the model's
    frameskip, see :func:`_model_action_space`) shrunk about its centre to ``action_bound``.

    Raises:
        ValueError: a bad ``action_bound`` (:func:`check_action_bound`) or an action space that does not
            match the model.
    """
    return _shrink(_model_action_space(model, action_space), check_action_bound(action_bound))


def _load_estimator(estimator, model, device):
    """A :class:`mpc.proprio_estimator.ProprioEstimator` (or the path of one) checked against ``model``.

    Raises:
        FileNotFoundError / ValueError: no such file, or a damaged one (see ``ProprioEstimator.load``).
        ValueError: a model without proprio, or an estimator of another proprio size or image size.
    """
    from .proprio_estimator import ProprioEstimator

    est = ProprioEstimator.load(estimator) if isinstance(estimator, (str, Path)) else estimator
    P = int(model.proprio_dim)
    if not P:
        raise ValueError("a proprio estimator was given but this world model predicts no proprio (proprio_dim=0)")
    if int(est.proprio_dim) != P:
        raise ValueError(f"the proprio estimator gives {est.proprio_dim} values, this world model's proprio has "
                         f"{P}; train the estimator on the model's dataset")
    size = getattr(model, "image_size", None)
    if size is not None and int(size) != int(est.image_size):
        raise ValueError(f"the proprio estimator takes {est.image_size} px images, the world model {size} px; "
                         "train the estimator on the model's dataset")
    return est.to(device).eval()


class MPCController:
    """Receding-horizon MPC in the latent space of a world model.

    Args:
        model: a :class:`mpc.WorldModel` (or anything with ``encode``, ``rollout``, ``action_dim``,
            ``num_hist``, ``frameskip``).
        planner: a planner object (``optimize(cost_fn, batch, init)``), or a registered name.
        objective: a callable ``(z_pred, z_goal, proprio_pred, proprio_goal) -> (B, S)``, or a name
            (default ``"last"``: MSE on the last predicted frame, DINO-WM's). One with ``alpha > 0``
            needs the goal's proprio at every :meth:`act`; one with ``members`` True (risk > 0, e.g.
            ``make_objective("last", risk=1.0)``) gets every ensemble member's prediction.
        horizon: H, planning horizon in model steps.
        replan_every: model steps executed from each plan before replanning.
        action_space: the env's Box (per env action); default: the bounds stored in the model
            (``model.action_low`` / ``action_high``, from its checkpoint).
        planner_options: options for ``make_planner`` when ``planner`` is a name.
        device: where planning runs (default: the model's device).
        record_gap: record the imagination gap of every plan (below; one extra S = 1 rollout per plan);
            ``predicted_tokens`` then holds the tokens ``(B, N, D)`` the latest plan predicts for the
            frame its executed steps lead to (decode them to see what the model expected).
        proprio_estimator: a :class:`mpc.proprio_estimator.ProprioEstimator` or the path of one: with
            an objective that weighs proprio (``alpha > 0``) and no ``goal_proprio`` passed to
            :meth:`act`, the goal's proprio is read from the goal image by it (the plan then still
            comes from the goal image alone). A value the estimator knows to wrap (a free joint's
            angle) is then compared with the goal's the shorter way round.
        action_bound: the fraction of the action box the planner searches, shrunk about the box's
            centre (1: the whole box). Smaller steps keep the candidates where a world model predicts
            well (short moves) and give MPC more replans along the way; Push-T's pusht_dino_wm entry of
            the standard suite plans in 0.4 of the box (README, "Smaller, shorter plans").

    Raises:
        ValueError: bad horizon / replan_every / action_bound, an action space that does not match
            the model, a goal-proprio objective (``alpha > 0``) with a model that predicts no proprio, or an
            objective whose temporal distance reads another encoder's latent.

    With ``record_gap`` every plan also records the *imagination gap*: the token MSE to the goal
    that the model predicts for the frame the executed part of the plan leads to (model step
    ``replan_every``, the ensemble's mean), and, at the next replan, the token MSE of the frame
    actually reached (encoded). ``imagination`` holds one dict per plan seen through, ``predicted``
    and ``realised`` float arrays ``(B,)``; the last plan of an episode stays unrecorded.
    """

    def __init__(self, model, planner="cem", objective="last", horizon: int = 5, replan_every: int = 1,
                 action_space: spaces.Box | None = None, planner_options: dict | None = None,
                 seed: int = 0, device=None, record_gap: bool = False, proprio_estimator=None,
                 action_bound: float = 1.0):
        if horizon < 1 or replan_every < 1 or replan_every > horizon:
            raise ValueError(f"need 1 <= replan_every <= horizon, got horizon={horizon}, replan_every={replan_every}")
        bound = check_action_bound(action_bound)
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.horizon = int(horizon)
        self.replan_every = int(replan_every)
        self.frameskip = int(model.frameskip)
        self.env_action_dim = model.action_dim // self.frameskip
        self.action_bound = bound
        self.action_space = planning_box(model, action_space, bound)
        if isinstance(planner, str):
            planner = make_planner(planner, action_space=self.action_space, horizon=self.horizon,
                                   seed=seed, device=self.device, **(planner_options or {}))
        self.planner = planner
        self.objective = make_objective(objective) if isinstance(objective, str) else objective
        self.uses_goal_proprio = float(getattr(self.objective, "alpha", 0) or 0) > 0
        if self.uses_goal_proprio and not model.proprio_dim:
            raise ValueError(f"the objective weighs goal proprio (alpha={self.objective.alpha}) but this "
                             "world model predicts no proprio (proprio_dim=0); set alpha=0")
        self.proprio_estimator = (None if proprio_estimator is None
                                  else _load_estimator(proprio_estimator, model, self.device))
        distance = getattr(self.objective, "distance", None)
        if distance is not None and hasattr(distance, "check_latent") and hasattr(model, "num_tokens"):
            distance.check_latent(getattr(model, "encoder_fingerprint", None), int(model.num_tokens),
                                  int(model.token_dim))  # a learned temporal distance of this latent
        self.last_plan_info: dict = {}
        self.plan_times: list[float] = []
        self.plan_rollouts: list[int] = []  # candidates evaluated per problem in each replan
        self.record_gap = bool(record_gap)
        # imagination gap: one dict per plan whose executed part has been seen through, with
        # "predicted" and "realised" float arrays (B,) (see _replan)
        self.imagination: list[dict] = []
        self.reset()

    def reset(self) -> None:
        """Forget the history, the queued actions and the warm start (call at each new episode)."""
        self._z_hist: deque = deque(maxlen=int(self.model.num_hist))   # each (B, N, D)
        self._p_hist: deque = deque(maxlen=int(self.model.num_hist))   # each (B, P); P may be 0
        self._a_hist: deque = deque(maxlen=max(int(self.model.num_hist) - 1, 1))  # each (B, Am)
        self._queue: list[np.ndarray] = []   # env actions (B, A) still to execute from the plan
        self._plan: torch.Tensor | None = None  # (B, H, Am) last plan, for the warm start
        self._pending: list[np.ndarray] = [] # env actions of the model step under way
        self._predicted = None  # (predicted latent cost (B,), z_goal) of the plan under way
        # with record_gap: the tokens (B, N, D) the plan under way predicts after its executed steps
        self.predicted_tokens: torch.Tensor | None = None
        self._steps = 0                      # env steps taken since reset
        self._goal_key: str | None = None
        self._z_goal: torch.Tensor | None = None
        self._p_goal_est: torch.Tensor | None = None  # the estimator's goal proprio for _goal_key
        self._batch: int | None = None

    # --- helpers -------------------------------------------------------------------------
    def _encode(self, pixels) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(pixels).to(self.device)

    def _goal_tokens(self, goal_image) -> torch.Tensor:
        goal = _check_image_batch(goal_image, "the goal image")
        raw = goal.cpu().numpy() if isinstance(goal, torch.Tensor) else goal
        key = hashlib.sha1(np.ascontiguousarray(raw).tobytes()).hexdigest()
        if key != self._goal_key:
            _check_image_size(self.model, goal, "the goal image")
            self._z_goal = self._encode(goal)
            self._p_goal_est = None
            if self.proprio_estimator is not None and self.uses_goal_proprio:
                with torch.no_grad():
                    self._p_goal_est = self.proprio_estimator(goal).to(self.device)  # (1 or B, P)
            self._goal_key = key
        return self._z_goal

    def _goal_proprio(self, goal_proprio) -> torch.Tensor | None:
        """The goal's proprio as a (B, P) tensor on the planning device (None: not given, or P = 0).

        Raises:
            ValueError: not (P,) / (B, P) for this model's P and B, NaN / inf, or missing while
                the objective weighs it.
        """
        P, B = int(self.model.proprio_dim), self._batch
        if goal_proprio is None or P == 0:
            if self.uses_goal_proprio:
                raise ValueError(f"the objective weighs goal proprio (alpha={self.objective.alpha}): pass "
                                 "goal_proprio (the goal state's proprio, (P,) or (B, P); wmpc envs give it "
                                 "as info['goal_proprio']), or set alpha=0")
            return None
        g = np.asarray(goal_proprio.detach().cpu() if isinstance(goal_proprio, torch.Tensor) else goal_proprio,
                       dtype=np.float32)
        g = g[None] if g.ndim == 1 else g
        if g.ndim != 2 or g.shape[1] != P or g.shape[0] not in (1, B):
            raise ValueError(f"goal_proprio must be (P,) or (B, P) = ({B}, {P}) for this model and batch; "
                             f"got {tuple(np.shape(goal_proprio))}")
        if not np.all(np.isfinite(g)):
            raise ValueError("goal_proprio contains NaN or inf")
        return torch.as_tensor(g, device=self.device).expand(B, P)

    def _goal(self, goal_image, goal_proprio) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked goal tokens (B, N, D) and goal proprio (B, P) or None."""
        z_goal = self._goal_tokens(goal_image)
        B = self._batch
        if z_goal.shape[0] == 1 and B > 1:
            z_goal = z_goal.expand(B, *z_goal.shape[1:])
        elif z_goal.shape[0] != B:
            raise ValueError(f"got {z_goal.shape[0]} goal images for {B} observations")
        if goal_proprio is None and self._p_goal_est is not None:  # read from the goal image
            goal_proprio = self._p_goal_est
        return z_goal, self._goal_proprio(goal_proprio)

    def _replan(self, z_goal: torch.Tensor, p_goal: torch.Tensor | None, active: np.ndarray | None = None) -> None:
        B = self._batch
        z_ctx = torch.stack(list(self._z_hist), dim=1)                       # (B, T, N, D)
        p_ctx = torch.stack(list(self._p_hist), dim=1)                       # (B, T, P)
        T = z_ctx.shape[1]
        past = (torch.stack(list(self._a_hist)[-(T - 1):], dim=1) if T > 1 else None)  # (B, T-1, Am)
        model, objective = self.model, self.objective
        members = {"members": True} if getattr(objective, "members", False) else {}  # risk-aware

        est = self.proprio_estimator if p_goal is not None and hasattr(self.proprio_estimator, "align") else None
        goal_b = None if est is None else p_goal[:, None, None]  # (B, 1, 1, P) against (B, S, H, P)

        # envs already done are not rolled out: their candidates cost 0 (their plan is not used)
        rows = (None if active is None or active.all() or not active.any()
                else torch.as_tensor(np.flatnonzero(active), device=self.device))
        pick = (lambda t: t) if rows is None else (lambda t: None if t is None else t[rows])
        zc, pc, pa, zg, pg, gb = (pick(t) for t in (z_ctx, p_ctx, past, z_goal, p_goal, goal_b))  # once per replan

        def cost_fn(actions: torch.Tensor) -> torch.Tensor:                 # (B, S, H, Am) -> (B, S)
            z_pred, p_pred = model.rollout(zc, pc, pick(actions), past_actions=pa, **members)
            if est is not None:  # periodic values (a free joint) compared the shorter way round
                p_pred = est.align(p_pred, gb if p_pred.ndim == 4 else gb.unsqueeze(2))
            cost = objective(z_pred, zg, p_pred, pg)                         # (b, S), b envs under way
            return cost if rows is None else cost.new_zeros(actions.shape[:2]).index_put((rows,), cost)

        if self.record_gap and self._predicted is not None:  # the frame the last plan led to is in
            predicted, goal = self._predicted
            realised = latent_distance(z_ctx[:, -1], goal)                   # (B,)
            self.imagination.append({"predicted": predicted, "realised": realised.cpu().numpy()})

        init = None
        if self._plan is not None:  # warm start: the old plan moved past what was executed
            init = self._plan
            for _ in range(self.replan_every):
                init = self.planner.shift(init)
        t0 = time.perf_counter()
        result = self.planner.optimize(cost_fn, batch=B, init=init)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.plan_times.append(time.perf_counter() - t0)
        self.plan_rollouts.append(int(result.info.get("rollouts", 0)))
        self.last_plan_info = dict(result.info, cost=result.cost.detach().cpu().numpy())
        self._plan = result.actions.detach()                                 # (B, H, Am)
        if self.record_gap:  # the latent cost the model predicts where the executed steps lead
            with torch.no_grad():
                z_plan, _ = model.rollout(z_ctx, p_ctx, self._plan[:, None], past_actions=past)
            z_reach = z_plan[:, 0, self.replan_every - 1]                    # (B, N, D)
            self._predicted = (latent_distance(z_reach, z_goal).cpu().numpy(), z_goal)
            self.predicted_tokens = z_reach.detach()
        steps = self._plan[:, : self.replan_every].cpu().numpy()             # (B, r, Am)
        steps = steps.reshape(B, self.replan_every * self.frameskip, self.env_action_dim)
        self._queue = [steps[:, i] for i in range(steps.shape[1])]

    # --- public --------------------------------------------------------------------------
    def act(self, obs, goal_image, goal_proprio=None, active=None) -> np.ndarray:
        """Return the next env action: (A,) for one env or (B, A) for a batch of envs.

        Args:
            obs: the env's observation dict (``pixels`` uint8 (H, W, 3) or (B, H, W, 3) and
                ``proprio``), or just the image (for a model with ``proprio_dim = 0``).
            goal_image: uint8 (H, W, 3) (shared by all envs) or (B, H, W, 3).
            goal_proprio: the goal state's proprio, float (P,) (shared) or (B, P), passed to the
                objective; one with ``alpha > 0`` needs it. Ignored by a model with P = 0.
            active: optional bool (B,): the envs still under way. A replan rolls out the candidates
                of these alone (the same plans for them up to float rounding, less work); the others get actions too,
                from candidates that were not rolled out, for the caller to drop (an env that has
                reached its goal and holds still). None: every env.

        Raises:
            ValueError: bad images (dtype, shape, or another size than the model's ``image_size``),
                missing or mis-sized proprio, a batch size other than the first call's, or no
                ``goal_proprio`` for an objective with ``alpha > 0``.
        """
        pixels, proprio, batched = _split_obs(obs)
        _check_image_size(self.model, pixels, "the observation image")
        if self._batch is None:
            self._batch = pixels.shape[0]
        elif pixels.shape[0] != self._batch:
            raise ValueError(f"this controller runs {self._batch} env(s); got {pixels.shape[0]} observations. Call reset() first")
        if active is not None:
            active = np.asarray(active)
            if active.dtype != bool or active.shape != (self._batch,):
                raise ValueError(f"active must be a bool array of shape ({self._batch},), one flag per env; "
                                 f"got {active.dtype} {active.shape}")
        P = int(self.model.proprio_dim)
        if P and proprio is None:
            raise ValueError("this world model conditions on proprioception: pass the env's observation dict "
                             "with 'pixels' and 'proprio', not the image alone")
        if P and proprio.shape[1] != P:
            raise ValueError(f"proprio has {proprio.shape[1]} values per env, this world model takes P={P}")
        new_frame = self._steps % self.frameskip == 0
        if new_frame and not self._queue:  # a replan comes: check the goal before the history changes
            goal = self._goal(goal_image, goal_proprio)
        if new_frame:  # a new model frame: record it (encoded once)
            if self._pending:
                model_action = np.concatenate(self._pending, axis=-1)                # (B, Am)
                self._a_hist.append(torch.as_tensor(model_action, device=self.device))
                self._pending = []
            self._z_hist.append(self._encode(pixels))
            self._p_hist.append(torch.as_tensor(proprio, device=self.device) if P  # (B, P); (B, 0) if P = 0
                                else torch.zeros(pixels.shape[0], 0, device=self.device))
            if not self._queue:
                self._replan(*goal, active=active)
        action = self._queue.pop(0)
        self._pending.append(action)
        self._steps += 1
        return action if batched else action[0]


def plan(obs, goal_image, model, planner: str = "cem", horizon: int = 5, objective="last",
         action_space: spaces.Box | None = None, device=None, seed: int = 0, goal_proprio=None,
         proprio_estimator=None, action_bound: float = 1.0,
         **options) -> np.ndarray:
    """Plan an action sequence from an observation to a goal image, in one call.

    Args:
        obs: the env's observation dict (``pixels`` + ``proprio``) or just a uint8 image
            (H, W, 3); a batch (B, H, W, 3) plans for B envs at once.
        goal_image: uint8 image of the goal, the same size as the observation (or a batch).
        model: a :class:`mpc.WorldModel` or the path of a saved checkpoint.
        planner: a planner name (``cem``, ``gd``, ``mppi``, ``icem``, ``cem_gd``) or object.
        horizon: H in model steps.
        objective: objective name or callable (e.g. ``make_objective("last", alpha=1.0)`` to weigh
            the goal's proprio as well).
        action_space: the env's action Box (default: the bounds stored with the model).
        goal_proprio: the goal state's proprio, (P,) or (B, P); needed when the objective has
            ``alpha > 0``, unless ``proprio_estimator`` reads it from the goal image.
        proprio_estimator: a proprio estimator or its file (see :class:`MPCController`).
        action_bound: the fraction of the action box searched, about its centre (see
            :class:`MPCController`).
        **options: planner options (e.g. ``samples=100, iterations=10``).

    Returns:
        float32 array ``(H * frameskip, A)``, or ``(B, H * frameskip, A)`` for a batch.

    Raises:
        ValueError: a non-uint8 or wrongly shaped image, NaN, a goal image whose size differs
            from the observation's or an image size other than the model's, an action space that
            does not match the model, or ``alpha > 0`` without ``goal_proprio``.
    """
    if isinstance(model, (str, Path)):
        from .world_model import WorldModel
        model = WorldModel.load(model, device=device)
    pixels, _, batched = _split_obs(obs)
    goal = _check_image_batch(goal_image, "the goal image")
    if tuple(goal.shape[1:]) != tuple(pixels.shape[1:]):
        raise ValueError(f"the goal image is {tuple(goal.shape[1:])} but the observation is "
                         f"{tuple(pixels.shape[1:])}; render both at the same image_size")
    ctrl = MPCController(model, planner, objective, horizon=horizon, replan_every=horizon,
                         action_space=action_space, planner_options=options, seed=seed, device=device,
                         proprio_estimator=proprio_estimator, action_bound=action_bound)
    ctrl._batch = pixels.shape[0]
    first = ctrl.act(obs, goal_image, goal_proprio=goal_proprio)
    rest = [q for q in ctrl._queue]
    out = np.stack([first if batched else first[None]] + rest, axis=1)          # (B, H*k, A)
    return out if batched else out[0]
