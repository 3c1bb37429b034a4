"""Is it the world model or the planner? The same planner and cost, with the env itself as the model.

    python -m benchmarks.true_dynamics CHECKPOINT [--cost latent|state|both] [--episodes 10] [--steps 15]
        [--samples 64 --iterations 4 --elites 8 --horizon 5 --init-std 1.0] [--alpha 0.0003
        --proprio-weights 1,1,0,0] [--distance FILE] [--seed 1000000] [--action-bound 1.0] [--compare]
    python -m benchmarks.true_dynamics CHECKPOINT --oracle-rank [--action-bound 1.0] [planner options as above]

``--action-bound F``: every planner the command runs searches the fraction F of the action box about its
centre, as ``wmpc eval action_bound=F`` does.

For each evaluation episode (the env made with the options of the model's training data, seeds
``seed + i`` as in ``wmpc eval``), every replan scores the planner's candidates by running them in a copy
of the env from the current true state (``set_state``, then the actions with the env's action repeat)
instead of in the world model:

- ``latent``: the planning cost of wmpc's planner (the model's encoder on the frame each candidate ends
  in, latent MSE to the goal image's tokens, ``+ alpha x`` the weighted squared error of the true final
  proprio to the goal's; the goal's proprio is the env's, so these rows are labelled goal-proprio when
  ``alpha > 0``); with ``--distance`` a learnt temporal distance (:mod:`mpc.temporal_distance`) takes
  the token MSE's place, for the world model of ``--compare`` too;
- ``state``: the env's own success distance (``goal_distance`` of the final state): a perfect model
  *and* a perfect cost, so only the planner and its budget remain.

``--compare`` also runs ``mpc.evaluation.evaluate`` with the world model and the same planner, episodes
and steps. Success is "reached at any step", as in wmpc evals. A task the planner solves on the true
dynamics but not with the model is limited by the model; one it fails on the true dynamics too is
limited by the planner's settings or (``latent`` below ``state``) by the cost. Each candidate is
simulated step by step on the CPU, so keep episodes and steps small (Push-T, 64 x 4: ~2 s per replan).

``--oracle-rank`` (:func:`oracle_rank`) asks the world model itself, at each episode's first replan: does
its planning cost rate the env's oracle (its first ``horizon`` model steps of ``oracle_action()``, which
for Push-T replay the push that made the goal) below the plan the planner finds with the model, and
where do both really lead? A model that rates the oracle cheaper while the plan misses leaves the
search short; one whose plans cost far less than the oracle yet miss is exploited by the planner
(its errors, not the search, decide).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

__all__ = ["TrueDynamicsCost", "run", "oracle_rank", "main"]


class TrueDynamicsCost:
    """``cost_fn(actions (1, S, H, Am)) -> (1, S)`` for one env, with a copy of it as the model.

    Args:
        env: the evaluation env (a wmpc GoalEnv; its state is read, never changed).
        shadow: a second env of the same kind and options, stepped for the candidates.
        model: the world model whose encoder (and frameskip) the latent cost uses.
        kind: ``"latent"`` or ``"state"`` (see the module docstring).
        alpha, proprio_weights: the goal-proprio term of the latent cost.
        distance: a temporal distance (or its file) in place of the latent cost's token MSE.
    """

    def __init__(self, env, shadow, model, kind: str = "latent", alpha: float = 0.0, proprio_weights=None,
                 distance=None):
        if kind not in ("latent", "state"):
            raise ValueError(f"kind must be 'latent' or 'state', got {kind!r}")
        self.env, self.shadow, self.model, self.kind = env.unwrapped, shadow.unwrapped, model, kind
        for e in (self.env, self.shadow):
            if not all(callable(getattr(e, f, None)) for f in ("get_state", "set_state", "_apply_action")):
                raise TypeError(f"{type(e).__name__} is not a wmpc GoalEnv (get_state / set_state / "
                                "_apply_action): the true dynamics need an env that restores states")
        from mpc.objectives import make_objective

        self.objective = make_objective("last", alpha=alpha, proprio_weights=proprio_weights,
                                        distance=distance)  # the planner's cost
        self.frameskip = int(model.frameskip)
        self.z_goal = None
        self.goal_state = self.goal_proprio = None

    def set_goal(self, info: dict) -> None:
        """The episode's goal: its image (encoded once), state and proprio."""
        with torch.no_grad():
            self.z_goal = self.model.encode(info["goal_image"][None]).float()  # (1, N, D)
        self.goal_state = np.asarray(info["goal_state"])
        self.goal_proprio = torch.as_tensor(np.asarray(info["goal_proprio"]), dtype=torch.float32)[None]  # (1, P)
        w = self.objective.proprio_weights
        if w is not None and w.numel() != self.goal_proprio.shape[1]:  # said now, not at the first plan
            raise ValueError(f"proprio_weights has {w.numel()} values, the env's proprio {self.goal_proprio.shape[1]}")

    def _run(self, start: np.ndarray, seq: np.ndarray) -> None:
        """Set the shadow to ``start`` and apply ``seq (H, Am)`` as the env would (repeat included)."""
        sh = self.shadow
        sh.set_state(start)
        low, high = sh.action_space.low, sh.action_space.high
        for a in seq.reshape(-1, seq.shape[-1] // self.frameskip):
            a = np.clip(a, low, high).astype(np.float32)
            for _ in range(sh.action_repeat):
                sh._apply_action(a)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        acts = actions.detach().cpu().numpy()                               # (1, S, H, Am)
        start = self.env.get_state()
        finals, frames, proprio = [], [], []
        for seq in acts[0]:
            self._run(start, seq)
            finals.append(self.shadow.get_state())
            if self.kind == "latent":
                frames.append(self.shadow._render())
                proprio.append(np.asarray(self.shadow._proprio(), np.float32))
        if self.kind == "state":
            cost = [self.shadow.goal_distance(s, self.goal_state) for s in finals]
            return torch.tensor([cost], dtype=torch.float32, device=actions.device)
        with torch.no_grad():
            z = self.model.encode(np.stack(frames)).float().cpu()            # (S, N, D)
        p = torch.as_tensor(np.stack(proprio), dtype=torch.float32)        # (S, P)
        cost = self.objective(z[None, :, None], self.z_goal.cpu(), p[None, :, None], self.goal_proprio)  # (1, S)
        return cost.to(actions.device)


def run(model, env_name: str | None = None, kind: str = "latent", episodes: int = 10, steps: int = 15,
        seed: int = 1_000_000, planner: str = "cem", planner_options: dict | None = None, horizon: int = 5,
        alpha: float = 0.0, proprio_weights=None, env_options: dict | None = None, progress: bool = True,
        distance=None, action_bound: float = 1.0) -> dict:
    """Plan with the true dynamics on ``episodes`` evaluation episodes; returns the success record.

    ``action_bound``: the fraction of the action box the planner searches, about its centre (as
    :class:`mpc.MPCController` does for ``wmpc eval action_bound=``)."""
    from tqdm import tqdm

    import envs as envs_pkg
    from mpc.controller import planning_box
    from mpc.evaluation.evaluate import _env_options
    from mpc.evaluation.metrics import wilson_interval
    from mpc.planners import make_planner

    env_name = env_name or model.env
    options = _env_options(env_name, env_options, model)
    env, shadow = envs_pkg.make_env(env_name, **options), envs_pkg.make_env(env_name, **options)
    fs = int(model.frameskip)
    space = planning_box(model, env.action_space, action_bound)
    cost = TrueDynamicsCost(env, shadow, model, kind, alpha, proprio_weights, distance)
    reached, final, times = [], [], []
    try:
        for i in tqdm(range(episodes), desc=f"{env_name} true dynamics ({kind})", disable=not progress):
            obs, info = env.reset(seed=seed + i)
            cost.set_goal(info)
            plan = make_planner(planner, action_space=space, horizon=horizon, seed=seed + i,
                                **(planner_options or {}))
            init, ok, queue = None, bool(info["is_success"]), []
            for _ in range(steps):
                if ok:
                    break
                if not queue:
                    t0 = time.perf_counter()
                    result = plan.optimize(cost, batch=1, init=init)
                    times.append(time.perf_counter() - t0)
                    init = plan.shift(result.actions)
                    queue = list(result.actions[0, 0].cpu().numpy().reshape(fs, -1))
                obs, _, _, _, info = env.step(queue.pop(0))
                ok = bool(info["is_success"])
            reached.append(ok)
            final.append(float(info["distance"]))
    finally:
        env.close()
        shadow.close()
    k = int(sum(reached))
    return {"env": env_name, "cost": kind, "episodes": episodes, "steps": steps, "success_rate": k / episodes,
            "success_ci95": wilson_interval(k, episodes), "mean_final_distance": float(np.mean(final)),
            "plan_time_s": float(np.mean(times)) if times else 0.0, "env_options": options,
            "action_bound": float(action_bound)}


def oracle_rank(model, env_name: str | None = None, episodes: int = 20, seed: int = 1_000_000,
                planner: str = "cem", planner_options: dict | None = None, horizon: int = 5, alpha: float = 0.0,
                proprio_weights=None, action_bound: float = 1.0, env_options: dict | None = None,
                progress: bool = True) -> dict:
    """The world model's cost of the oracle's first ``horizon`` model steps against the planner's first plan.

    Per episode (seed ``seed + i``): the oracle's actions come from a copy of the env reset to the same
    seed and driven by ``oracle_action()``; the plan from ``planner`` on the model's cost from the first
    frame (the goal's proprio is the env's when ``alpha > 0``), in the action box shrunk to
    ``action_bound`` (as :class:`mpc.MPCController` does). Both sequences are scored by that cost and
    played in the copy from the start state to their true distance (the env's ``goal_distance``).

    Returns:
        dict with ``episodes``, ``oracle_cheaper`` (fraction of episodes whose oracle the model rates
        below the plan), the median model costs ``oracle_cost`` and ``plan_cost``, the fractions of plans
        and oracle sequences that end within the env's success threshold (``plan_success``,
        ``oracle_success``), and ``rows`` (one dict per episode).
    """
    from tqdm import tqdm

    import envs as envs_pkg
    from mpc.controller import planning_box
    from mpc.evaluation.evaluate import _env_options
    from mpc.objectives import make_objective
    from mpc.planners import make_planner

    env_name = env_name or model.env
    options = _env_options(env_name, env_options, model)
    env, shadow = envs_pkg.make_env(env_name, **options), envs_pkg.make_env(env_name, **options)
    fs = int(model.frameskip)
    space = planning_box(model, env.action_space, action_bound)
    objective = make_objective("last", alpha=alpha, proprio_weights=proprio_weights)
    cost_of = TrueDynamicsCost(env, shadow, model, "state")  # its _run plays a sequence in the copy
    u, sh = env.unwrapped, shadow.unwrapped
    rows = []
    try:
        for i in tqdm(range(episodes), desc=f"{env_name} oracle rank", disable=not progress):
            obs, info = env.reset(seed=seed + i)
            shadow.reset(seed=seed + i)
            oracle = []
            for _ in range(horizon * fs):
                a = np.asarray(sh.oracle_action(), np.float32)
                oracle.append(a)
                shadow.step(a)
            oracle = np.stack(oracle).reshape(horizon, -1)                   # (H, Am)
            with torch.no_grad():
                z0 = model.encode(obs["pixels"][None]).float()[:, None]      # (1, 1, N, D)
                z_goal = model.encode(info["goal_image"][None]).float()      # (1, N, D)
            p0 = (torch.as_tensor(np.asarray(obs["proprio"], np.float32))[None, None] if model.proprio_dim
                  else torch.zeros(1, 1, 0))                                 # (1, 1, P)
            p_goal = torch.as_tensor(np.asarray(info["goal_proprio"], np.float32))[None] if alpha > 0 else None

            def cost_fn(actions):                                            # (1, S, H, Am) -> (1, S)
                with torch.no_grad():
                    z, p = model.rollout(z0, p0, actions.float())
                return objective(z, z_goal, p, p_goal)

            result = make_planner(planner, action_space=space, horizon=horizon, seed=seed + i,
                                  **(planner_options or {})).optimize(cost_fn, batch=1)
            plan = result.actions[0].detach().cpu().numpy()                 # (H, Am)
            costs = cost_fn(torch.as_tensor(np.stack([oracle, plan]))[None])[0].tolist()
            start, dist = u.get_state(), []
            for seq in (oracle, plan):
                cost_of._run(start, seq)
                dist.append(float(sh.goal_distance(sh.get_state(), np.asarray(info["goal_state"]))))
            rows.append({"episode": i, "oracle_cost": costs[0], "plan_cost": costs[1], "oracle_distance": dist[0],
                         "plan_distance": dist[1]})
    finally:
        env.close()
        shadow.close()
    thr = float(u.success_threshold)
    return {"env": env_name, "episodes": episodes, "horizon": horizon, "action_bound": float(action_bound),
            "oracle_cheaper": float(np.mean([r["oracle_cost"] < r["plan_cost"] for r in rows])),
            "oracle_cost": float(np.median([r["oracle_cost"] for r in rows])),
            "plan_cost": float(np.median([r["plan_cost"] for r in rows])),
            "plan_success": float(np.mean([r["plan_distance"] <= thr for r in rows])),
            "oracle_success": float(np.mean([r["oracle_distance"] <= thr for r in rows])), "rows": rows}


def _line(label: str, r: dict) -> str:
    lo, hi = r["success_ci95"]
    return (f"{label:<32} success {r['success_rate']:.2f} ({lo:.2f}-{hi:.2f}) over {r['episodes']} episodes of "
            f"{r['steps']} steps; mean final distance {r['mean_final_distance']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.true_dynamics", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a world model saved by wmpc train (its encoder scores the latent cost)")
    ap.add_argument("--env", default=None, help="env name (default: the one the model was trained on)")
    ap.add_argument("--cost", default="both", choices=("latent", "state", "both"))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15, help="env steps per episode")
    ap.add_argument("--seed", type=int, default=1_000_000, help="first evaluation seed (episode i: seed + i)")
    ap.add_argument("--planner", default="cem")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--elites", type=int, default=8)
    ap.add_argument("--init-std", type=float, default=1.0, help="CEM's initial std (fraction of the half-width)")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.0, help="goal-proprio weight of the latent cost")
    ap.add_argument("--proprio-weights", default=None, help="comma list, e.g. 1,1,0,0 (Push-T: the pusher's x, y)")
    ap.add_argument("--distance", default=None, help="a temporal-distance file (wmpc train-distance): the latent "
                    "cost (and --compare's world model) then use the learnt steps to the goal instead of the token MSE")
    ap.add_argument("--compare", action="store_true", help="also plan with the world model (wmpc's evaluate)")
    ap.add_argument("--oracle-rank", action="store_true", help="instead: the world model's cost of the env's oracle "
                    "against its planner's first plan, and where each really leads (oracle_rank)")
    ap.add_argument("--action-bound", type=float, default=1.0, help="fraction of the action box the planners "
                    "search, about its centre (wmpc eval's action_bound)")
    args = ap.parse_args(argv)
    from mpc.world_model import WorldModel

    model = WorldModel.load(args.checkpoint)
    model.eval()
    weights = None if args.proprio_weights is None else [float(v) for v in args.proprio_weights.split(",")]
    popts = {"samples": args.samples, "iterations": args.iterations, "elites": args.elites,
             "init_std": args.init_std}
    common = dict(episodes=args.episodes, steps=args.steps, seed=args.seed, planner=args.planner,
                  planner_options=popts, horizon=args.horizon, action_bound=args.action_bound)
    env_name = args.env or model.env
    if args.oracle_rank:
        r = oracle_rank(model, env_name, args.episodes, args.seed, args.planner, popts, args.horizon, args.alpha,
                        weights, args.action_bound)
        print(f"# {env_name}: {args.planner} {args.samples} x {args.iterations} (elites {args.elites}, init_std "
              f"{args.init_std}), horizon {args.horizon}, alpha {args.alpha}, action_bound {args.action_bound}; "
              f"first replan of {args.episodes} episodes, model {args.checkpoint}")
        print(f"the model rates the oracle below its plan in {r['oracle_cheaper']:.2f} of the episodes; median cost "
              f"oracle {r['oracle_cost']:.4g}, plan {r['plan_cost']:.4g}; within the success threshold: plan "
              f"{r['plan_success']:.2f}, oracle {r['oracle_success']:.2f}")
        return 0
    print(f"# {env_name}: {args.planner} {args.samples} x {args.iterations} (elites {args.elites}, init_std "
          f"{args.init_std}), horizon {args.horizon}, alpha {args.alpha}, action_bound {args.action_bound}; encoder and "
          f"frameskip of {args.checkpoint}")
    for kind in (("latent", "state") if args.cost == "both" else (args.cost,)):
        r = run(model, env_name, kind, alpha=args.alpha if kind == "latent" else 0.0, proprio_weights=weights,
                distance=args.distance if kind == "latent" else None, **common)
        label = (f"true dynamics, {kind} cost" + (" [goal-proprio]" if kind == "latent" and args.alpha else "")
                 + (" [temporal-distance]" if kind == "latent" and args.distance else ""))
        print(_line(label, r), f"({r['plan_time_s']:.2f} s per replan)", flush=True)
    if args.compare:
        from mpc.evaluation.evaluate import evaluate

        r = evaluate(env_name, model=model, episodes=args.episodes, steps=args.steps, seed=args.seed,
                     batch_envs=min(args.episodes, 25), videos=0, progress=False, planner=args.planner,
                     planner_options=popts, horizon=args.horizon, alpha=args.alpha, proprio_weights=weights,
                     distance=args.distance, action_bound=args.action_bound)
        print(_line("world model" + (" [goal-proprio]" if args.alpha else "")
                    + (" [temporal-distance]" if args.distance else ""),
                    {"success_rate": r.success_rate, "success_ci95": r.success_ci95, "episodes": r.episodes,
                     "steps": r.steps, "mean_final_distance": r.mean_final_distance}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
