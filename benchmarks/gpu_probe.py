"""Where the GPU rollout's time goes: matmul ceilings at its shapes, attention kernels, batch size.

Run: ``python -m benchmarks.gpu_probe [--device cuda] [--quick] [--tokens N] [--json OUT.json]``.

Beside :mod:`benchmarks.hot_path` (which times wmpc against the reference), this measures the
ceilings a ``dino_wm`` rollout (196 x 384 tokens, bf16 autocast on CUDA, one context frame, horizon 5)
runs against: the rate of a large bf16 matmul and of the rollout's own matmul shapes
(S x N rows by 384 into 384 and into the MLP width), the rollout's time and rate with each attention
kernel (``model.predictor.attn_backend``), at two batch sizes, and with the compiled step. Rates are
analytic FLOPs (:func:`benchmarks.hot_path.rollout_flops`) over the best of a few timed calls after
warm-up, as fractions of the spec bf16 peak on CUDA. ``--quick`` is a small smoke run (any device);
``--tokens`` sets the tokens per frame of the rollouts and their matmul shapes (default 196: fewer make
a quicker smoke run that is no longer DINO-WM's size).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks import hot_path as hp
from benchmarks._timing import timed

__all__ = ["probe", "main"]


def _best(fn, device, warmup: int = 2, repeat: int = 5) -> float:
    """The fastest of ``repeat`` synced calls of ``fn()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return min(timed(fn, device)[0] for _ in range(repeat))


def probe(device: str = "cuda", quick: bool = False, tokens: int | None = None) -> dict:
    """Every figure of the probe as a dict (seconds, TFLOP/s and fractions of the peak).

    Args:
        device: where to measure ("cuda", "cpu", ...).
        quick: small batch sizes and matmul, fewer timed calls: a smoke run.
        tokens: tokens per frame N of the rollouts and of the matmul shapes (default dino_wm's 196).

    Returns:
        ``matmul_*`` and ``rollout_<kernel>_S<S>`` entries (a kernel the device lacks has ``error``),
        with ``tokens`` and the machine.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = next((v for k, v in hp.PEAK_BF16_TFLOPS.items() if k in name), None) if cuda else None
    S_small, S_large, n = (4, 8, 256) if quick else (300, 1200, 8192)
    N = hp.SIZES["dino_wm"]["N"] if tokens is None else int(tokens)
    D = hp.SIZES["dino_wm"]["D"]
    if N < 1:
        raise ValueError(f"tokens must be >= 1, got {N}")
    out: dict = {"machine": name, "torch": torch.__version__, "quick": quick, "tokens": N, "peak_tflops": peak}

    def frac(tflops):
        return tflops / peak if peak else None

    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = _best(lambda: a @ b, dev, 3, 10)
    out[f"matmul_{n}^3"] = {"tflops": 2 * n ** 3 / t / 1e12}
    a = b = None  # freed before the rollouts
    rows = S_small * N
    mlp_dim = hp.load_preset("dino_wm")["predictor"]["mlp_dim"]
    x = torch.randn(rows, D, device=dev, dtype=dtype)
    for width in (D, mlp_dim):  # the projections and the MLP's first layer
        w = torch.randn(D, width, device=dev, dtype=dtype)
        t = _best(lambda: x @ w, dev, 3, 10)
        tf = 2 * rows * D * width / t / 1e12
        out[f"matmul_{rows}x{D}x{width}"] = {"tflops": tf, "fraction_of_peak": frac(tf)}
    x = None
    print(json.dumps(out), flush=True)

    def rollout(label, S, **predictor):
        try:
            m = hp.build_model("dino_wm", dev, tokens=N, autocast_bf16=cuda, **predictor)
            inp = hp.make_inputs(m, 1, S, context=1)
            call = lambda: m.rollout(inp["zc"], inp["pc"], inp["actions"], inp["pa"])  # noqa: E731
            with torch.inference_mode():
                first, _ = timed(call, dev)  # the compiled step compiles here
                t = _best(call, dev, *((0, 1) if quick else (2, 5)))
            tf = hp.rollout_flops(m, 1, S, context=1) / t / 1e12
            out[label] = {"S": S, "seconds": t, "first_call_s": first, "tflops": tf, "fraction_of_peak": frac(tf)}
        except Exception as e:  # a kernel this device or dtype lacks: reported, the others still run
            out[label] = {"S": S, "error": hp.error_text(e)}
        print(label, json.dumps(out[label]), flush=True)

    for backend in ("auto", "flash", "efficient", "cudnn", "math"):
        rollout(f"rollout_{backend}_S{S_small}", S_small, attn_backend=backend)
    rollout(f"rollout_auto_S{S_large}", S_large)
    if not quick:
        rollout(f"rollout_compiled_S{S_small}", S_small, compile=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--tokens", type=int, default=None,
                    help="tokens per frame N of the rollouts (default 196, dino_wm's; fewer: a quicker run)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU (use --device cpu --quick for a smoke run)")
    res = probe(args.device, args.quick, args.tokens)
    if args.json:
        from mpc._io import write_json
        write_json(args.json, res, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
