"""Does residual (delta) prediction lower the open-loop ratio? Plain against residual predictors.

Run: ``python -m benchmarks.residual --run runs/bench/standard pusht reacher wall`` after
``wmpc bench suite=standard`` (it reuses that run's datasets and trained jepa encoders). For each
env it trains the suite's world model twice with the suite's settings and seed, once plain and once
with ``model.predictor.residual=true``, and prints the open-loop ratio (token MSE / copy-last-frame
MSE on the validation windows, 1 to 5 steps) of both, as a markdown table (also written to
``<out>/residual.md`` and ``residual.json``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mpc._io import read_json, write_json

__all__ = ["compare", "main"]


def compare(run: Path, envs: list[str], out: Path, suite: str = "standard", encoder: str = "jepa",
            overrides: tuple[str, ...] = ()) -> dict:
    """Train plain and residual models of each env on ``run``'s data and encoder; their ratios by env.

    ``overrides``: hydra overrides of the suite's config (those the suite run was made with)."""
    from hydra import compose, initialize_config_dir

    from benchmarks.suite.settings import SuiteSettings, merge
    from mpc._config import config_dir
    from mpc.training import train

    with initialize_config_dir(str(config_dir()), version_base=None):
        s = SuiteSettings.from_config(compose("bench", overrides=[f"bench={suite}", f"out={run}", *overrides]))
    results = {}
    for env in envs:
        found = sorted((run / "encoders").glob(f"{env}__{encoder}-*/encoder.safetensors"))
        if not found:
            raise FileNotFoundError(f"no trained {encoder} encoder of {env} in {run}/encoders: run "
                                    f"`wmpc bench suite={suite} env={env} encoder={encoder} out={run}` first")
        for residual in (False, True):
            folder = out / f"{env}-{'residual' if residual else 'plain'}"
            t0 = time.perf_counter()
            train({"env": {"name": s.envs[env].env, **s.envs[env].options},
                   "encoder": {"name": encoder, "checkpoint": str(found[-1])},
                   "model": merge(s.model_config(env, encoder), {"predictor": {"residual": residual}}),
                   "train": s.train, "data": str(run / "data" / env), "out": str(folder), "resume": False,
                   "seed": s.seed, "device": s.device, "encode_batch": 256, "progress": False})
            ratio = read_json(folder / "eval_metrics.json")["ratio"]
            results.setdefault(env, {})["residual" if residual else "plain"] = {
                "ratio": ratio, "seconds": time.perf_counter() - t0}
    write_json(out / "residual.json", results)
    lines = ["| env | predictor | open-loop ratio, steps 1..5 |", "|---|---|---|"]
    for env, by in results.items():
        for kind, r in by.items():
            lines.append(f"| {env} | {kind} | {' / '.join(f'{x:.3f}' for x in r['ratio'])} |")
    (out / "residual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.residual", description=__doc__.splitlines()[0])
    p.add_argument("envs", nargs="+", help="envs of the suite run (e.g. pusht reacher wall)")
    p.add_argument("--run", type=Path, default=Path("runs/bench/standard"), help="the suite's run folder")
    p.add_argument("--out", type=Path, default=Path("runs/residual"), help="where the models and tables go")
    p.add_argument("--suite", default="standard", help="the suite the run folder belongs to")
    a = p.parse_args(argv)
    compare(a.run, a.envs, a.out, suite=a.suite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
