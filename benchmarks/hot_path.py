"""The hot path, measured: wmpc's rollout and CEM plan against the DINO-WM reference.

Run: ``python -m benchmarks.hot_path [--quick] [--device cuda] [--json OUT.json]``.

In one run on one machine this prints, section after section (never overlapping: on CPU each
measurement is a subprocess of its own, started after the previous one ended):

1. the roofline: the machine's fp32 rate on a large ``torch.matmul`` (CPU: 2048^3, or
   ``--roofline-size``, best of a few; measured again in each rollout's process right after it, and
   the fraction taken against that rate, since a shared CPU's rate drifts) or the spec bf16 peak (CUDA);
2. plans and rollouts, wmpc against :mod:`benchmarks.reference` (DINO-WM's work: one env at a time,
   a ``num_hist`` window recomputed every step, the observation encoded once per candidate when an
   encoder is attached, explicit masked softmax attention, float32), at three sizes:
   ``dino_wm16`` (wmpc's public ``mpc.plan`` with a random-weight DINOv2 at 56 px: 16 x 384 tokens,
   CEM 300 x 2, horizon 5, one env), ``dino_wm`` (196 x 384 tokens; ``--dino-tokens`` sets fewer for a
   quicker run, whose rows then say so and are not DINO-WM's size) and ``tiny`` (2 envs on CPU, 4 on
   CUDA); each rollout's achieved FLOP/s (analytic FLOPs, :func:`rollout_flops`) as a fraction of the roofline;
3. the memory bound: a dino_wm rollout of many candidates under a memory budget (chunks of S);
4. planner overhead (planner-only time against rollout time per iteration) and the rollouts each
   planner needs to reach a given cost on the tiny model's latent cost;
5. the speed-up of each hot-path switch on its own: KV cache, prefix sharing (the context computed
   once per env instead of once per candidate), bf16 autocast (CUDA only), ``torch.compile``.

Fair timing: both sides get the same warm-up (one call of the same shape, or one CEM iteration
before a plan) and then the same number of timed calls (best is reported). Nothing is
extrapolated unless ``--ref-*-iters`` asks for it (at least 2 measured iterations), and then the
figure is labelled "extrapolated". Context: plans start from one frame, as ``mpc.plan`` and
DINO-WM's planner do; the switch table uses 3 context frames (closed-loop MPC keeps ``num_hist``).

Peak memory: on CPU each measurement runs in its own subprocess and reports ``ru_maxrss`` (the
resident peak, the interpreter and torch included; the baseline after building the model is printed
too); on CUDA ``torch.cuda.max_memory_allocated``. Weights are random (speed does not depend on
them). The last line gives the dino_wm plan speed-ups and the roofline fraction.
"""
from __future__ import annotations

import argparse
import json
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

A, P, H, T = 2, 4, 5, 3  # env action dim, proprio dim, horizon, context frames of the switch table
ROOFLINE_SIZE = 2048  # side n of the CPU roofline's fp32 n x n x n matmul (--roofline-size)
PLAN_CONTEXT = 1  # context frames of the plans: mpc.plan and DINO-WM's planner start from one frame
SIZES = {  # name -> preset and latent shape
    "tiny": {"preset": "tiny", "N": 64, "D": 32, "what": "tiny preset, 64 x 32 tokens (VAE 8 x 8 grid)"},
    "dino_wm": {"preset": "dino_wm", "N": 196, "D": 384,
                "what": "dino_wm preset, 196 x 384 tokens (DINO-WM's ViT-S patch grid)"},
    "dino_wm16": {"preset": "dino_wm", "N": 16, "D": 384, "image_size": 56,
                  "what": "dino_wm preset, 16 x 384 tokens from a random-weight DINOv2 ViT-S/14 at 56 px; "
                          "wmpc through mpc.plan (encoder included on both sides)"},
}
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense tensor-core peaks (spec)


# --- building blocks ---------------------------------------------------------------------------
def build_model(size: str, device, tokens: int | None = None, **predictor) -> WorldModel:
    """A randomly initialised world model of ``size`` (see ``SIZES``; ``tokens`` overrides N)."""
    spec = SIZES[size]
    pre = load_preset(spec["preset"])
    pre["predictor"].update(dropout=0.0, **predictor)
    pre.update(num_tokens=None, token_dim=None)  # the latent shape is the size's, not the preset's
    cfg = config_from_preset(pre, num_tokens=tokens or spec["N"], token_dim=spec["D"], env_action_dim=A,
                             proprio_dim=P)
    torch.manual_seed(0)
    return WorldModel(cfg).to(device).eval()


def build_encoder(size: str, device):
    """The random-weight DINOv2 of a size with ``image_size`` (its N patches at D = 384)."""
    from encoders import make_encoder
    return make_encoder("dinov2", weights="random", image_size=SIZES[size]["image_size"]).to(device)


def make_inputs(model: WorldModel, batch: int, samples: int, seed: int = 0, context: int = T) -> dict:
    """Context ``(B, T, N, D)``, proprio, past actions, goal tokens and one candidate set."""
    g = torch.Generator().manual_seed(seed)
    N, D, Am = model.num_tokens, model.token_dim, model.action_dim
    t = {"zc": torch.randn(batch, context, N, D, generator=g),
         "pc": torch.randn(batch, context, P, generator=g),
         "pa": torch.rand(batch, context - 1, Am, generator=g) * 2 - 1,
         "goal": torch.randn(batch, N, D, generator=g),
         "actions": torch.rand(batch, samples, H, Am, generator=g) * 2 - 1}
    return {k: v.to(model.device) for k, v in t.items()}


def make_images(size: int, batch: int, seed: int = 0) -> dict:
    """uint8 observation ``(B, size, size, 3)`` and goal images of the same shape."""
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8),
            "goal": torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8)}


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
def _callable(spec: dict, device):
    """The call a spec times, and facts about it; a plan's call takes its CEM iterations (default the spec's)."""
    kind = spec["kind"]
    if kind == "matmul":
        n = spec.get("n", ROOFLINE_SIZE)
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
        return (lambda: torch.matmul(a, b)), {"flops": 2.0 * n ** 3}
    model = build_model(spec["size"], device, tokens=spec.get("tokens"), **spec.get("predictor", {}))
    B, S, ctx = spec["batch"], spec["samples"], spec.get("context", T)
    I = spec.get("iterations", 1)
    x = make_inputs(model, B, S, context=ctx)
    options = dict(spec.get("options", {}))
    info = {"flops": rollout_flops(model, B, S, context=ctx), "chunk": None}
    encoder = build_encoder(spec["size"], device) if spec.get("encoder") else None
    if encoder is not None:
        model.attach_encoder(encoder)
        imgs = make_images(SIZES[spec["size"]]["image_size"], B)
    if kind.startswith("ref"):
        ref = ReferenceWorldModel(model)

    if kind == "ref_rollout":
        return (lambda: ref.rollout(x["zc"], x["pc"], x["actions"], x["pa"])), info
    if kind == "ref_plan":
        ones = torch.ones(model.action_dim, device=device)
        enc = {"images": imgs["obs"][:, None], "goal_images": imgs["goal"]} if encoder is not None else {}
        return (lambda it=I: reference_cem_plan(ref, None if enc else x["zc"], x["pc"],
                                                None if enc else x["goal"], x["pa"], -ones, ones, horizon=H,
                                                samples=S, iterations=it, topk=spec["topk"], **enc)), info
    if kind == "rollout":
        return (lambda: model.rollout(x["zc"], x["pc"], x["actions"], x["pa"], **options)), info
    if kind == "rollout_budget":
        from mpc.memory import candidate_chunk, chunked_rollout
        chunk = candidate_chunk(model.config, B, S, ctx, H, memory_budget_mb=spec["budget_mb"], device=device)
        info["chunk"] = chunk
        return (lambda: chunked_rollout(model.rollout, x["zc"], x["pc"], x["actions"], x["pa"],
                                        chunk=chunk)), info
    if kind == "rollout_no_sharing":
        return (lambda: cached_per_candidate(model, x["zc"], x["pc"], x["pa"], x["actions"])), info
    if kind == "plan":
        from mpc.planners import make_planner
        objective = make_objective("last")

        def cost_fn(actions):
            z, _ = model.rollout(x["zc"], x["pc"], actions, x["pa"], **options)
            return objective(z, x["goal"])

        def run(it=I):
            planner = make_planner("cem", action_space=_box(model), horizon=H, device=device, samples=S,
                                   iterations=it, elites=spec["topk"])
            return planner.optimize(cost_fn, batch=B)
        return run, info
    if kind == "mpc_plan":  # the public one-call API: encode the observation and goal, plan
        import numpy as np
        from gymnasium import spaces

        from mpc.controller import plan
        box = spaces.Box(-1.0, 1.0, (A,), np.float32)
        obs = {"pixels": imgs["obs"].numpy(), "proprio": x["pc"][:, -1].cpu().numpy()}
        return (lambda it=I: plan(obs, imgs["goal"].numpy(), model, planner="cem", horizon=H, action_space=box,
                                  device=device, samples=S, iterations=it, elites=spec["topk"])), info
    raise ValueError(f"unknown measurement kind {kind!r}")


def measure(spec: dict) -> dict:
    """Run one measurement described by ``spec`` and time it.

    Spec keys: ``kind``, ``size``, ``tokens`` (N of the model, default the size's), ``batch``,
    ``samples``, ``context``, ``iterations``, ``topk``, ``predictor``, ``options``, ``encoder``,
    ``device``, ``threads``; ``warmup`` (untimed calls before the timed ones; a plan's warm-up call
    runs ``warmup_iterations``, default 1) and ``repeat`` (timed calls); ``matmul_check`` (CPU: time
    an fp32 ``roofline_size``-cubed matmul after, default :data:`ROOFLINE_SIZE`).

    Returns:
        dict with ``seconds`` (best timed call), ``first_s`` (first timed call), ``cpu_s`` (process
        CPU time per timed call), ``peak_mb``, ``base_mb``, ``flops`` (of one rollout) and ``chunk``.
    """
    device = torch.device(spec.get("device", "cpu"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    fn, info = _callable(spec, device)
    is_plan = spec["kind"] in ("plan", "ref_plan", "mpc_plan")
    warm = (lambda: fn(spec.get("warmup_iterations", 1))) if is_plan else fn
    sync(device)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_mb = torch.cuda.memory_allocated(device) / 2**20
    with torch.inference_mode():
        for _ in range(spec.get("warmup", 0)):
            warm()
        sync(device)
        times, cpu0 = [], time.process_time()
        for _ in range(spec.get("repeat", 1)):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        cpu_s = (time.process_time() - cpu0) / len(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"seconds": min(times), "first_s": times[0], "cpu_s": cpu_s, "peak_mb": peak_mb,
           "base_mb": base_mb, **info}
    if spec.get("matmul_check") and device.type == "cpu":  # the roofline under this process's conditions
        mm, mm_info = _callable({"kind": "matmul", "n": spec.get("roofline_size", ROOFLINE_SIZE)}, device)
        mm()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            mm()
            best = min(best, time.perf_counter() - t0)
        out["matmul_flops_per_s"] = mm_info["flops"] / best
    return out


def error_text(e: BaseException) -> str:
    """A failed measurement's row text: the exception's type and the first line of its message."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def run_isolated(spec: dict, isolate: bool, timeout: float | None = None) -> dict:
    """Run :func:`measure` in a fresh subprocess (CPU peak memory) or in this process (CUDA)."""
    if not isolate:
        try:
            return measure(spec)
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            return {"error": f"out of memory: {str(e).splitlines()[0]}"}
        except Exception as e:  # one failed measurement is reported in its row; the others still run
            return {"error": error_text(e)}
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
def size_label(size: str, cfg: dict) -> str:
    """``size`` as rows name it: ``dino_wm`` run at other than its 196 tokens says how many (``cfg``: settings)."""
    n = cfg.get("dino_tokens", SIZES["dino_wm"]["N"])
    return f"{size} ({n} tokens)" if size == "dino_wm" and n != SIZES["dino_wm"]["N"] else size


def _fmt_s(r: dict) -> str:
    return r["error"] if "error" in r else f"{r['seconds']:9.3f} s"


def _fmt_mb(r: dict) -> str:
    return "" if "error" in r else f"{r['peak_mb']:8.0f} MiB (base {r['base_mb']:.0f})"


def ratio(a: dict, b: dict, key: str = "seconds") -> float | None:
    """``a[key] / b[key]`` of two measurements (a speed-up when ``a`` is the slower side); None when
    either failed or ``b[key]`` is zero."""
    if "error" in a or "error" in b or not b.get(key):
        return None
    return a[key] / b[key]


def rate(r: dict) -> tuple[float, float] | None:
    """``(FLOP/s, fraction of the roofline)`` of a measured rollout; None without a roofline."""
    if "error" in r or "roofline_fraction" not in r:
        return None
    return r["flops"] / r["seconds"], r["roofline_fraction"]


def _ratio(a: dict, b: dict, key: str = "seconds") -> str:
    x = ratio(a, b, key)
    return "  n/a" if x is None else f"{x:6.1f}x"


def _rate(r: dict) -> str:
    measured = rate(r)
    if measured is None:
        return ""
    flops, fraction = measured
    beside = (f" (matmul beside it {r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s)"
              if "matmul_flops_per_s" in r else "")
    return f"  {flops / 1e9:7.1f} GFLOP/s = {100 * fraction:4.1f}% of the roofline{beside}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hot_path", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ap.add_argument("--dino16-plan", default=None, help="SxI of the dino_wm16 plan (default 300x2; quick 16x1)")
    ap.add_argument("--dino-plan", default=None, help="SxI of the dino_wm plan (CPU 10x2, quick 2x1, CUDA 300x30)")
    ap.add_argument("--tiny-plan", default=None, help="SxI of the tiny plan (CPU 300x3, quick 16x2, CUDA 300x30)")
    ap.add_argument("--dino-tokens", type=int, default=None,
                    help="tokens per frame N of the dino_wm size, in its plans, rollouts, memory bound and switches "
                         "(default 196, DINO-WM's 14 x 14 patch grid; fewer: a quicker run, labelled so, whose "
                         "dino_wm figures are not DINO-WM's)")
    ap.add_argument("--roofline-size", type=int, default=ROOFLINE_SIZE,
                    help="side n of the CPU roofline's fp32 n x n x n matmul (default %(default)s; smaller: quicker, and "
                         "a lower rate than the machine's)")
    ap.add_argument("--ref-dino-iters", type=int, default=None,
                    help="iterations the reference's dino_wm plan runs (>= 2; its time is then extrapolated "
                         "to the plan's iterations and labelled so)")
    ap.add_argument("--ref-tiny-iters", type=int, default=None, help="the same for the tiny plan")
    ap.add_argument("--switch-samples", type=int, default=None, help="S of the switch table (CPU 10, CUDA 300)")
    ap.add_argument("--memory-samples", type=int, default=None, help="S of the memory-bound case (CPU 32, CUDA 300)")
    ap.add_argument("--envs", type=int, default=None, help="envs planned at once at tiny size (CPU 2, CUDA 4)")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the switch table")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: " + ",".join(SECTIONS))
    ap.add_argument("--only", default="", help="comma list of the only sections to run")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per CPU measurement")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--in-process", action="store_true",
                    help="measure in this process (CPU peak memory then covers everything so far)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    return ap


SECTIONS = ("roofline", "plans", "memory", "planners", "switches")


def settings(args: argparse.Namespace) -> dict:
    """Every size and flag of a run, chosen from the command line and the device."""
    cuda = torch.device(args.device).type == "cuda"
    q = args.quick
    parse = lambda s: tuple(int(v) for v in s.lower().split("x"))  # noqa: E731
    envs = args.envs or (4 if cuda else 2)  # the CPU default keeps the run within 10 minutes on 2 cores
    plans = {  # size -> (B, S, I)
        "dino_wm16": (1, *parse(args.dino16_plan or ("16x1" if q else "300x2"))),
        "dino_wm": (1, *parse(args.dino_plan or ("300x30" if cuda else ("2x1" if q else "10x2")))),
        "tiny": (envs, *parse(args.tiny_plan or ("300x30" if cuda else ("16x2" if q else "300x3")))),
    }
    dino_tokens = SIZES["dino_wm"]["N"] if args.dino_tokens is None else args.dino_tokens
    if dino_tokens < 1:
        raise SystemExit(f"--dino-tokens must be >= 1, got {dino_tokens}")
    if args.roofline_size < 1:
        raise SystemExit(f"--roofline-size must be >= 1, got {args.roofline_size}")
    ref_iters = {"dino_wm": args.ref_dino_iters, "tiny": args.ref_tiny_iters}
    for size, it in ref_iters.items():
        if it is not None and it < 2:
            raise SystemExit(f"--ref-{size.split('_')[0]}-iters must be >= 2 (an extrapolation needs "
                             f"at least 2 measured iterations), got {it}")
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        skip |= set(SECTIONS) - set(args.only.split(","))
    return {
        "device": args.device, "cuda": cuda, "quick": q,
        "threads": None if cuda else (args.threads or torch.get_num_threads()),
        "isolate": not cuda and not args.in_process, "timeout": args.timeout,
        "plans": plans, "ref_iters": {k: min(v, plans[k][2]) for k, v in ref_iters.items() if v},
        "dino_tokens": dino_tokens, "roofline_size": args.roofline_size,
        "memory_samples": args.memory_samples or (300 if cuda else (4 if q else 32)),
        "memory_budget_mb": 2048 if cuda else 512,
        "switch_samples": args.switch_samples or (300 if cuda else (2 if q else 10)),
        "compile": not (args.no_compile or q), "sections": [s for s in SECTIONS if s not in skip],
        "horizon": H, "plan_context": PLAN_CONTEXT, "switch_context": T, "envs": envs,
    }


def collect(cfg: dict) -> dict:
    """Run the sections of ``cfg`` (from :func:`settings`) one after another, printing as they go.

    Returns:
        every result, with the machine, torch version and ``cfg`` itself.
    """
    device, cuda = torch.device(cfg["device"]), cfg["cuda"]
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    import platform
    machine = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    results: dict = {"machine": machine, "cpus": os.cpu_count(), "torch": torch.__version__,
                     "python": platform.python_version(), "settings": cfg}
    common = {"device": cfg["device"], "threads": cfg["threads"]}

    def run(spec):
        return run_isolated({**common, **spec}, cfg["isolate"], cfg["timeout"])

    print(f"# wmpc hot path on {machine} ({cfg['threads'] or 'GPU'} threads, {os.cpu_count()} CPUs), "
          f"torch {torch.__version__}")
    for name, spec in SIZES.items():
        print(f"#   {name}: {spec['what']}")
    if size_label("dino_wm", cfg) != "dino_wm":
        print(f"#   dino_wm run at {cfg['dino_tokens']} x 384 tokens (--dino-tokens): not DINO-WM's size")
    sizes = ", ".join(f"{k} B={b} S x I={s}x{i}" for k, (b, s, i) in cfg["plans"].items())
    print(f"# sizes: plans {sizes}; horizon {H}; memory S={cfg['memory_samples']}; "
          f"switches S={cfg['switch_samples']}{'' if cfg['compile'] else ' (no compile)'}")

    # 1. roofline
    peak = None
    if "roofline" in cfg["sections"]:
        if cuda:
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in machine), None)
            peak = peak * 1e12 if peak else None
            results["roofline"] = {"kind": "spec bf16 peak", "flops_per_s": peak}
            print(f"\n## Roofline: spec bf16 peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
        else:
            n = cfg["roofline_size"]
            mm = run({"kind": "matmul", "n": n, "warmup": 1, "repeat": 5})
            peak = mm["flops"] / mm["seconds"] if "error" not in mm else None
            results["roofline"] = {"kind": f"fp32 torch.matmul {n}^3, best of 5", "flops_per_s": peak, **mm}
            print(f"\n## Roofline: fp32 torch.matmul {n} x {n} x {n}, best of 5: "
                  f"{(peak or float('nan')) / 1e9:.1f} GFLOP/s")

    # 2. plans and rollouts, wmpc against the reference
    if "plans" in cfg["sections"]:
        print(f"\n## CEM plan (horizon {H}, {PLAN_CONTEXT} context frame) and one rollout: wmpc vs reference "
              "(same warm-up, best timed call)")
        prec = "bf16 autocast" if cuda else "float32"
        for size, (b, S, I) in cfg["plans"].items():
            topk = max(2, min(30, S // 10))
            rI = cfg["ref_iters"].get(size, I)
            wm_opts = {"autocast_bf16": True} if cuda else {}
            enc = size == "dino_wm16"
            base = {"size": size, "batch": b, "samples": S, "context": PLAN_CONTEXT, "topk": topk,
                    "warmup": 1, "repeat": 1, "encoder": enc}
            if size == "dino_wm":
                base["tokens"] = cfg["dino_tokens"]
            w_plan = run({**base, "kind": "mpc_plan" if enc else "plan", "iterations": I, "predictor": wm_opts})
            r_plan = run({**base, "kind": "ref_plan", "iterations": rI})
            if "error" not in r_plan and rI != I:
                r_plan = {**r_plan, "seconds": r_plan["seconds"] * I / rI, "cpu_s": r_plan["cpu_s"] * I / rI,
                          "extrapolated_from_iterations": rI}
            roll = {**base, "encoder": False, "warmup": 1, "repeat": 3 if cuda else 1, "matmul_check": True,
                    "roofline_size": cfg["roofline_size"]}
            w_roll = run({**roll, "kind": "rollout", "predictor": wm_opts})
            r_roll = run({**roll, "kind": "ref_rollout"})
            results[f"{size}_plan"] = {"B": b, "S": S, "I": I, "wmpc": w_plan, "ref": r_plan}
            results[f"{size}_rollout"] = {"B": b, "S": S, "wmpc": w_roll, "ref": r_roll}
            measured = [w_roll, r_roll]
            if cfg["compile"] and size == "dino_wm":  # the per-step function compiled (an option)
                comp = {**wm_opts, "compile": True}
                w_comp = run({**roll, "kind": "rollout", "predictor": comp, "warmup": 2})
                results[f"{size}_rollout"]["wmpc_compiled"] = w_comp
                measured.append(w_comp)
                if cuda:  # the plan itself with the compiled step (the warm-up plan compiles)
                    results[f"{size}_plan"]["wmpc_compiled"] = run({**base, "kind": "plan", "iterations": I,
                                                                    "predictor": comp, "warmup": 2})
            for r in measured:  # against the matmul rate measured beside it (a shared CPU drifts)
                local = r.get("matmul_flops_per_s", peak) if "error" not in r else None
                if local:
                    r["roofline_fraction"] = r["flops"] / r["seconds"] / local
            extra = (f"; reference ran {rI} iterations, its time EXTRAPOLATED x{I / rI:g}" if rI != I else "")
            what = "mpc.plan (encodes obs and goal once)" if enc else "CEM planner on tokens"
            print(f"{size_label(size, cfg)}: {b} env(s), S x I = {S} x {I}, wmpc {what}, {prec}; reference float32"
                  f"{', obs encoded per candidate' if enc else ''}{extra}")
            print(f"  plan     wmpc {_fmt_s(w_plan)} {_fmt_mb(w_plan)}")
            print(f"           ref  {_fmt_s(r_plan)} {_fmt_mb(r_plan)}")
            print(f"           speed-up {_ratio(r_plan, w_plan)} (cpu time {_ratio(r_plan, w_plan, 'cpu_s')}),"
                  f" wmpc peak / ref peak = {_ratio(w_plan, r_plan, 'peak_mb')}")
            if "wmpc_compiled" in results[f"{size}_plan"]:
                w_pc = results[f"{size}_plan"]["wmpc_compiled"]
                print(f"           wmpc {_fmt_s(w_pc)} {_fmt_mb(w_pc)}  (model.predictor.compile=true), "
                      f"speed-up {_ratio(r_plan, w_pc)}")
            print(f"  rollout  wmpc {_fmt_s(w_roll)} {_fmt_mb(w_roll)}{_rate(w_roll)}")
            if "wmpc_compiled" in results[f"{size}_rollout"]:
                w_comp = results[f"{size}_rollout"]["wmpc_compiled"]
                print(f"           wmpc {_fmt_s(w_comp)} {_fmt_mb(w_comp)}{_rate(w_comp)}  "
                      "(model.predictor.compile=true)")
            print(f"           ref  {_fmt_s(r_roll)} {_fmt_mb(r_roll)}")
            print(f"           speed-up {_ratio(r_roll, w_roll)} (cpu time {_ratio(r_roll, w_roll, 'cpu_s')}),"
                  f" wmpc peak / ref peak = {_ratio(w_roll, r_roll, 'peak_mb')}")

    # 3. memory bound: many candidates under a budget
    if "memory" in cfg["sections"]:
        S, budget = cfg["memory_samples"], cfg["memory_budget_mb"]
        print(f"\n## Memory bound: {size_label('dino_wm', cfg)} rollout, 1 env, S = {S}, H = {H}, "
              f"memory_budget_mb = {budget}")
        base = {"size": "dino_wm", "tokens": cfg["dino_tokens"], "batch": 1, "samples": S, "kind": "rollout",
                "warmup": 1}
        un = run(base)
        ch = run({**base, "kind": "rollout_budget", "budget_mb": budget})
        results["memory"] = {"S": S, "budget_mb": budget, "unchunked": un, "chunked": ch}
        print(f"  unchunked {_fmt_s(un)} {_fmt_mb(un)}")
        print(f"  chunked   {_fmt_s(ch)} {_fmt_mb(ch)}  ({ch.get('chunk')} candidates per chunk)")

    # 4. planners: overhead and rollouts to a cost
    if "planners" in cfg["sections"]:
        from benchmarks import planner_stats
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        results["planners"] = planner_stats.report(device, quick=cfg["quick"])

    # 5. switches, each on its own (dino_wm rollout)
    if "switches" in cfg["sections"]:
        S = cfg["switch_samples"]
        print(f"\n## Switches on their own: {size_label('dino_wm', cfg)} rollout, 1 env, S = {S}, H = {H}, "
              f"{T} context frames")
        base = {"size": "dino_wm", "tokens": cfg["dino_tokens"], "batch": 1, "samples": S, "context": T,
                "warmup": 1, "repeat": 3 if cuda else 1}
        cases = [("uncached (full history, context per candidate)", {"kind": "rollout", "options": {"use_cache": False}}),
                 ("KV cache, context per candidate", {"kind": "rollout_no_sharing"}),
                 ("KV cache + prefix sharing (default)", {"kind": "rollout"})]
        if cuda:
            cases.append(("  + bf16 autocast", {"kind": "rollout", "predictor": {"autocast_bf16": True}}))
        if cfg["compile"] and cuda:
            cases.append(("  + bf16 + torch.compile", {"kind": "rollout",
                                                       "predictor": {"autocast_bf16": True, "compile": True}}))
        elif cfg["compile"]:
            cases.append(("  + torch.compile", {"kind": "rollout", "predictor": {"compile": True}}))
        sw = {label: run({**base, **extra}) for label, extra in cases}
        results["switches"] = sw
        labels = list(sw)
        for i, label in enumerate(labels):
            r = sw[label]
            prev = sw[labels[i - 1 if i < 4 or cuda else 2]] if i else None  # the case without the switch
            extra = f"  switch alone {_ratio(prev, r)}" if prev is not None else ""
            first = " (warm-up call compiles)" if "compile" in label else ""
            print(f"  {label:48s} {_fmt_s(r)} {_fmt_mb(r)}{extra}{first}")
    return results


def summary(results: dict) -> str:
    """The closing line: the dino_wm plan speed-ups and the dino_wm rollout's roofline fraction."""
    parts, cfg = [], results.get("settings", {})
    for size in ("dino_wm16", "dino_wm"):
        r = results.get(f"{size}_plan")
        if r and ratio(r["ref"], r["wmpc"]) is not None:
            ex = " extrapolated" if "extrapolated_from_iterations" in r["ref"] else ""
            parts.append(f"{size_label(size, cfg)} plan speed-up {ratio(r['ref'], r['wmpc']):.1f}x{ex} "
                         f"(S x I = {r['S']} x {r['I']}, peak {r['wmpc']['peak_mb']:.0f} vs {r['ref']['peak_mb']:.0f} MiB)")
            c = r.get("wmpc_compiled", {})
            if "seconds" in c:  # CUDA: the plan with the compiled step
                parts.append(f"{size_label(size, cfg)} plan {r['wmpc']['seconds']:.2f} s ({c['seconds']:.2f} s with "
                             "model.predictor.compile=true)")
    roll = results.get("dino_wm_rollout", {}).get("wmpc", {})
    if "roofline_fraction" in roll:
        comp = results["dino_wm_rollout"].get("wmpc_compiled", {})
        with_compile = (f" ({100 * comp['roofline_fraction']:.0f}% with model.predictor.compile=true)"
                        if "roofline_fraction" in comp else "")
        parts.append(f"{size_label('dino_wm', cfg)} rollout at {100 * roll['roofline_fraction']:.0f}% of the "
                     f"roofline{with_compile}")
    return "RESULT: " + ("; ".join(parts) if parts else "no dino_wm figures measured")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))), flush=True)
        return 0
    results = collect(settings(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print()
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
