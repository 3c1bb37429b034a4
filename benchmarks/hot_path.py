"""The hot path, measured: wmpc's rollout and CEM plan against a DINO-WM-style reference.

Run: ``python -m benchmarks.hot_path [--quick] [--device cuda] [--json OUT.json]``.

In one run on one machine this prints, for the ``tiny`` size (tiny preset on 64 x 32 VAE-grid
latents, 4 envs at once) and the ``dino_wm`` size (196 tokens x 384, depth 6, 16 heads, MLP 2048):

1. time and peak memory of a full CEM plan (S candidates x I iterations, horizon 5) and of one
   rollout, wmpc against :mod:`benchmarks.reference` (one env at a time, full-history recompute
   every step, explicit masked softmax attention, float32, context copied per candidate);
2. the speed-up of each hot-path switch on its own: KV cache, prefix sharing (the context computed
   once per env instead of once per candidate), bf16 autocast (CUDA only), ``torch.compile``;
3. the memory bound: a dino_wm rollout of many candidates under a memory budget (chunks of S);
4. planner overhead (planner-only time against rollout time per iteration) and the rollouts each
   planner needs to reach a given cost on the tiny model's latent cost;
5. on CUDA, the fraction of the GPU's peak bf16 rate the rollout reaches (FLOPs counted analytically).

Peak memory: on CPU each measurement runs in its own subprocess and reports ``ru_maxrss`` (the
resident peak, the interpreter and torch included; the baseline after building the model is printed
too); on CUDA ``torch.cuda.max_memory_allocated``. Weights are random (speed does not depend on
them). Imports only torch and wmpc's world model, planners and objectives (no envs, no encoders).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

from benchmarks._timing import sync
from benchmarks.reference import ReferenceWorldModel, reference_cem_plan
from mpc.objectives import make_objective
from mpc.world_model import WorldModel, config_from_preset, load_preset

A, P, H, T = 2, 4, 5, 3  # env action dim, proprio dim, horizon, context frames
# the tiny preset is meant for 64-token latents (configs/model/tiny.yaml)
SIZES = {  # name -> preset and latent shape
    "tiny": {"preset": "tiny", "N": 64, "D": 32, "what": "tiny preset, 64 x 32 tokens (VAE 8 x 8 grid)"},
    "dino_wm": {"preset": "dino_wm", "N": 196, "D": 384,
                "what": "dino_wm preset, 196 x 384 tokens (DINOv2 ViT-S/14 at 224 px)"},
}
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense tensor-core peaks (spec)


# --- building blocks ---------------------------------------------------------------------------
def build_model(size: str, device, tokens: int | None = None, **predictor) -> WorldModel:
    """A randomly initialised world model of ``size`` (see ``SIZES``; ``tokens`` overrides N)."""
    spec = SIZES[size]
    pre = load_preset(spec["preset"])
    pre["predictor"].update(dropout=0.0, **predictor)
    cfg = config_from_preset(pre, num_tokens=tokens or spec["N"], token_dim=spec["D"], env_action_dim=A,
                             proprio_dim=P)
    torch.manual_seed(0)
    return WorldModel(cfg).to(device).eval()


def make_inputs(model: WorldModel, batch: int, samples: int, seed: int = 0) -> dict:
    """Context ``(B, T, N, D)``, proprio, past actions, goal tokens and one candidate set."""
    g = torch.Generator().manual_seed(seed)
    N, D, Am = model.num_tokens, model.token_dim, model.action_dim
    t = {"zc": torch.randn(batch, T, N, D, generator=g), "pc": torch.randn(batch, T, P, generator=g),
         "pa": torch.rand(batch, T - 1, Am, generator=g) * 2 - 1,
         "goal": torch.randn(batch, N, D, generator=g),
         "actions": torch.rand(batch, samples, H, Am, generator=g) * 2 - 1}
    return {k: v.to(model.device) for k, v in t.items()}


def _box(model: WorldModel):
    ones = torch.ones(model.action_dim)
    return SimpleNamespace(low=(-ones).numpy(), high=ones.numpy())


def cached_per_candidate(model: WorldModel, zc, pc, pa, a):
    """KV-cached rollout WITHOUT prefix sharing: the context runs once per candidate (B*S batch).

    Same inputs/outputs as ``WorldModel.rollout`` (batched); used to time prefix sharing alone.
    """
    return model.rollout(zc, pc, a, pa, share_prefix=False)


def rollout_flops(model: WorldModel, batch: int, samples: int, horizon: int = H, context: int = T,
                  attention: bool = True) -> float:
    """Analytic FLOPs (2 per multiply-add) of a KV-cached rollout: matmuls of attention and MLPs.

    Counts the context prefill once per env and, per candidate and step, the embeddings, the
    q/k/v/out projections, QK^T and AV over the attended window (``attention=False`` leaves these
    two out), the MLP and the read-out heads.
    """
    c, p = model.config, model.config.predictor
    N, D, Pd = c.num_tokens, c.token_dim, c.proprio_dim
    W = model.predictor.width
    joined = D + p.action_emb + p.proprio_emb if p.join == "concat" else D
    per_token = 2 * joined * W if joined != W else 0
    per_token += p.depth * (2 * W * 3 * W + 2 * W * W + 2 * 2 * W * p.mlp_dim)
    per_token += 2 * W * D
    def attn(frames_seen: int) -> float:  # per query token, all layers
        return p.depth * 2 * 2 * frames_seen * N * W if attention else 0
    head = 2 * W * D  # read-out, on predicted frames only
    prefill = sum(N * (per_token - head + attn(min(t + 1, p.num_hist))) for t in range(context - 1))
    steps = sum(N * (per_token + attn(min(context + h, p.num_hist))) + 2 * W * Pd
                for h in range(horizon))
    return batch * (prefill + samples * steps)


# --- one measurement ---------------------------------------------------------------------------
def measure(spec: dict) -> dict:
    """Run one measurement described by ``spec`` (see the ``CASE_*`` builders) and time it.

    Returns:
        dict with ``seconds`` (best of ``repeat`` after ``warmup``), ``first_s`` (first call,
        compilation included), ``cpu_s``, ``peak_mb``, ``base_mb`` and extra keys.
    """
    device = torch.device(spec.get("device", "cpu"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = build_model(spec["size"], device, **spec.get("predictor", {}))
    B, S = spec["batch"], spec["samples"]
    x = make_inputs(model, B, S)
    kind = spec["kind"]
    ref = ReferenceWorldModel(model) if kind.startswith("ref") else None
    options = dict(spec.get("options", {}))

    if kind == "ref_rollout":
        fn = lambda: ref.rollout(x["zc"], x["pc"], x["actions"], x["pa"])  # noqa: E731
    elif kind == "ref_plan":
        ones = torch.ones(model.action_dim, device=device)
        fn = lambda: reference_cem_plan(ref, x["zc"], x["pc"], x["goal"], x["pa"], -ones, ones,  # noqa: E731
                                        horizon=H, samples=S, iterations=spec["iterations"],
                                        topk=spec["topk"])
    elif kind == "rollout":
        fn = lambda: model.rollout(x["zc"], x["pc"], x["actions"], x["pa"], **options)  # noqa: E731
    elif kind == "rollout_budget":
        from mpc.memory import candidate_chunk, chunked_rollout
        chunk = candidate_chunk(model.config, B, S, T, H, memory_budget_mb=spec["budget_mb"],
                                device=device)
        options["chunk"] = chunk
        fn = lambda: chunked_rollout(model.rollout, x["zc"], x["pc"], x["actions"], x["pa"],  # noqa: E731
                                     chunk=chunk)
    elif kind == "rollout_no_sharing":
        fn = lambda: cached_per_candidate(model, x["zc"], x["pc"], x["pa"], x["actions"])  # noqa: E731
    elif kind == "plan":
        from mpc.planners import make_planner
        objective = make_objective("last")
        planner = make_planner("cem", action_space=_box(model), horizon=H, device=device, samples=S,
                               iterations=spec["iterations"], elites=spec["topk"])

        def cost_fn(actions):
            z, _ = model.rollout(x["zc"], x["pc"], actions, x["pa"], **options)
            return objective(z, x["goal"])
        fn = lambda: planner.optimize(cost_fn, batch=B)  # noqa: E731
    else:
        raise ValueError(f"unknown measurement kind {kind!r}")

    sync(device)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_mb = torch.cuda.memory_allocated(device) / 2**20
    times, cpu0 = [], time.process_time()
    with torch.inference_mode():
        for _ in range(spec.get("warmup", 0) + spec.get("repeat", 1)):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
    cpu_s = (time.process_time() - cpu0) / len(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = times[spec.get("warmup", 0):] or times
    return {"seconds": min(timed), "first_s": times[0], "cpu_s": cpu_s, "peak_mb": peak_mb,
            "base_mb": base_mb, "flops": rollout_flops(model, B, S), "chunk": options.get("chunk")}


def run_isolated(spec: dict, isolate: bool, timeout: float | None = None) -> dict:
    """Run :func:`measure` in a fresh subprocess (CPU peak memory) or in this process (CUDA)."""
    if not isolate:
        try:
            return measure(spec)
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            return {"error": f"out of memory: {str(e).splitlines()[0]}"}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    cmd = [sys.executable, "-m", "benchmarks.hot_path", "--measure", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {out.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


# --- report ------------------------------------------------------------------------------------
def _fmt_s(r: dict) -> str:
    return r["error"] if "error" in r else f"{r['seconds']:9.3f} s"


def _fmt_mb(r: dict) -> str:
    return "" if "error" in r else f"{r['peak_mb']:8.0f} MiB (base {r['base_mb']:.0f})"


def _ratio(a: dict, b: dict, key: str = "seconds") -> str:
    if "error" in a or "error" in b or not b.get(key):
        return "  n/a"
    return f"{a[key] / b[key]:6.1f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hot_path", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every case")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ap.add_argument("--dino-plan", default=None, help="SxI of the dino_wm plan (CPU default 30x2, CUDA 300x30)")
    ap.add_argument("--ref-dino-iters", type=int, default=None,
                    help="iterations the reference's dino_wm plan actually runs (time scaled to the plan's)")
    ap.add_argument("--ref-tiny-iters", type=int, default=None,
                    help="iterations the reference's tiny plan actually runs (time scaled to the plan's)")
    ap.add_argument("--switch-samples", type=int, default=None, help="S of the switch table (CPU 10, CUDA 300)")
    ap.add_argument("--memory-samples", type=int, default=None, help="S of the memory-bound case (CPU 32, CUDA 300)")
    ap.add_argument("--tiny-plan", default=None, help="SxI of the tiny plan (default 300x30)")
    ap.add_argument("--envs", type=int, default=4, help="envs planned at once at tiny size")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: plans,switches,memory,planners")
    ap.add_argument("--only", default="", help="comma list of the only sections to run")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per CPU measurement")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--in-process", action="store_true",
                    help="measure in this process (CPU peak memory then covers everything so far)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))), flush=True)
        return 0

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    isolate = not cuda and not args.in_process
    threads = args.threads or torch.get_num_threads()
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        skip |= {"plans", "switches", "memory", "planners"} - set(args.only.split(","))
    parse = lambda s: tuple(int(v) for v in s.lower().split("x"))  # noqa: E731
    dino_S, dino_I = parse(args.dino_plan or ("300x30" if cuda else ("8x1" if args.quick else "10x2")))
    tiny_S, tiny_I = parse(args.tiny_plan or ("64x3" if args.quick else "300x30"))
    ref_dino_I = min(args.ref_dino_iters or dino_I, dino_I)
    ref_tiny_I = min(args.ref_tiny_iters or tiny_I, tiny_I)
    B = args.envs
    common = {"device": str(device), "threads": threads if not cuda else None}
    results: dict = {"device": str(device), "threads": threads, "torch": torch.__version__}
    if cuda:
        results["gpu"] = torch.cuda.get_device_name(device)
    print(f"# wmpc hot path on {results.get('gpu', 'CPU')} ({threads} threads), torch {torch.__version__}")
    for name, spec in SIZES.items():
        print(f"#   {name}: {spec['what']}")

    def run(spec):
        r = run_isolated({**common, **spec}, isolate, args.timeout)
        return r

    # 1. plans and rollouts, wmpc against the reference
    if "plans" not in skip:
        print(f"\n## CEM plan (horizon {H}) and one rollout: wmpc vs reference (best of the timed calls)")
        rows = [("dino_wm", 1, dino_S, dino_I, ref_dino_I), ("tiny", B, tiny_S, tiny_I, ref_tiny_I)]
        for size, b, S, I, rI in rows:
            topk = max(2, min(30, S // 10))
            wm_opts = {"autocast_bf16": True} if cuda else {}
            w_plan = run({"size": size, "kind": "plan", "batch": b, "samples": S, "iterations": I,
                          "topk": topk, "predictor": wm_opts, "warmup": 1 if cuda else 0})
            r_plan = run({"size": size, "kind": "ref_plan", "batch": b, "samples": S, "iterations": rI,
                          "topk": topk})
            if "error" not in r_plan and rI != I:
                r_plan = {**r_plan, "seconds": r_plan["seconds"] * I / rI, "cpu_s": r_plan["cpu_s"] * I / rI,
                          "scaled_from_iters": rI}
            w_roll = run({"size": size, "kind": "rollout", "batch": b, "samples": S,
                          "predictor": wm_opts, "warmup": 1, "repeat": 3 if cuda else 1})
            r_roll = run({"size": size, "kind": "ref_rollout", "batch": b, "samples": S,
                          "warmup": 1 if cuda else 0})
            results[f"{size}_plan"] = {"S": S, "I": I, "B": b, "wmpc": w_plan, "ref": r_plan}
            results[f"{size}_rollout"] = {"S": S, "B": b, "wmpc": w_roll, "ref": r_roll}
            prec = "bf16 autocast" if cuda else "float32"
            scaled = f" (reference ran {rI} iterations, time x{I / rI:g})" if rI != I else ""
            print(f"{size}: {b} env(s), S x I = {S} x {I}, wmpc {prec}, reference float32{scaled}")
            print(f"  plan     wmpc {_fmt_s(w_plan)} {_fmt_mb(w_plan)}")
            print(f"           ref  {_fmt_s(r_plan)} {_fmt_mb(r_plan)}")
            print(f"           speed-up {_ratio(r_plan, w_plan)} (cpu time {_ratio(r_plan, w_plan, 'cpu_s')}),"
                  f" wmpc peak / ref peak = {_ratio(w_plan, r_plan, 'peak_mb')}")
            print(f"  rollout  wmpc {_fmt_s(w_roll)} {_fmt_mb(w_roll)}")
            print(f"           ref  {_fmt_s(r_roll)} {_fmt_mb(r_roll)}")
            print(f"           speed-up {_ratio(r_roll, w_roll)} (cpu time {_ratio(r_roll, w_roll, 'cpu_s')}),"
                  f" wmpc peak / ref peak = {_ratio(w_roll, r_roll, 'peak_mb')}")
            if cuda and "error" not in w_roll:
                gpu = results["gpu"]
                peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
                tflops = w_roll["flops"] / w_roll["seconds"] / 1e12
                frac = f", {100 * tflops / peak:.1f}% of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
                print(f"           rollout rate {tflops:.1f} TFLOP/s (analytic FLOPs {w_roll['flops']:.3g}){frac}")
                results[f"{size}_rollout"]["tflops"] = tflops

    # 2. memory bound: many candidates under a budget
    if "memory" not in skip:
        S = args.memory_samples or (300 if cuda else (16 if args.quick else 32))
        budget = 512 if not cuda else 2048
        print(f"\n## Memory bound: dino_wm rollout, 1 env, S = {S}, H = {H}, memory_budget_mb = {budget}")
        base = {"size": "dino_wm", "batch": 1, "samples": S, "kind": "rollout"}
        un = run(base)
        ch = run({**base, "kind": "rollout_budget", "budget_mb": budget})
        results["memory"] = {"S": S, "budget_mb": budget, "unchunked": un, "chunked": ch}
        print(f"  unchunked {_fmt_s(un)} {_fmt_mb(un)}")
        print(f"  chunked   {_fmt_s(ch)} {_fmt_mb(ch)}  ({ch.get('chunk')} candidates per chunk)")

    # 3. planners: overhead and rollouts to a cost
    if "planners" not in skip:
        from benchmarks import planner_stats
        results["planners"] = planner_stats.report(device, quick=args.quick)

    # 4. switches, each on its own (dino_wm rollout)
    if "switches" not in skip:
        S = args.switch_samples or (300 if cuda else (8 if args.quick else 10))
        print(f"\n## Switches on their own: dino_wm rollout, 1 env, S = {S}, H = {H}")
        base = {"size": "dino_wm", "batch": 1, "samples": S, "warmup": 1, "repeat": 3 if cuda else 1}
        cases = [("uncached (full history, context per candidate)", {"kind": "rollout", "options": {"use_cache": False}}),
                 ("KV cache, context per candidate", {"kind": "rollout_no_sharing"}),
                 ("KV cache + prefix sharing (default)", {"kind": "rollout"})]
        if cuda:
            cases.append(("  + bf16 autocast", {"kind": "rollout", "predictor": {"autocast_bf16": True}}))
        if cuda:  # one compiled case per device (compilation takes a while)
            cases.append(("  + bf16 + torch.compile", {"kind": "rollout",
                                                       "predictor": {"autocast_bf16": True, "compile": True}}))
        else:
            cases.append(("  + torch.compile", {"kind": "rollout", "predictor": {"compile": True}}))
        sw = {}
        for label, extra in cases:
            sw[label] = run({**base, **extra})
        results["switches"] = sw
        ref_of = {1: 0, 2: 1, 3: 2, 4: 3 if cuda else 2}  # the case without the switch
        labels = list(sw)
        for i, label in enumerate(labels):
            r = sw[label]
            prev = sw[labels[ref_of[i]]] if i else None
            extra = f"  switch alone {_ratio(prev, r)}" if prev is not None else ""
            first = f" (first call {r['first_s']:.1f} s)" if "error" not in r and "compile" in label else ""
            print(f"  {label:48s} {_fmt_s(r)} {_fmt_mb(r)}{extra}{first}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
