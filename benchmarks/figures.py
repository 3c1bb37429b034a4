"""Every performance figure of the README from one command: JSON plus a markdown table.

Run: ``python -m benchmarks.figures [--quick] [--out DIR] [hot_path options]``.

Runs the sections of :mod:`benchmarks.hot_path` one after another (roofline, plans and rollouts
against the DINO-WM reference, memory bound, planner overhead, switches), then writes
``DIR/figures.json`` (every number, the machine, torch version and every flag) and
``DIR/figures.md`` (the same as markdown tables, headed by the command that made them). The README's
performance section is pasted from ``figures.md``. ``--quick`` is a smoke run at small sizes; any
other option is passed to ``hot_path`` (e.g. ``--device cuda``, ``--only plans``, ``--dino-tokens 16``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import hot_path
from mpc._io import atomic_write, write_json

__all__ = ["markdown", "main"]


def _s(r: dict) -> str:
    return f"error: {r['error']}" if "error" in r else f"{r['seconds']:.3f} s"


def _mb(r: dict) -> str:
    return "" if "error" in r else f"{r['peak_mb'] / 1024:.2f} GiB"


def _x(a: dict, b: dict, key: str = "seconds") -> str:
    x = hot_path.ratio(a, b, key)
    return "n/a" if x is None else f"{x:.1f}x"


def _rate(r: dict) -> str:
    measured = hot_path.rate(r)
    if measured is None:
        return ""
    flops, fraction = measured
    return f"{flops / 1e9:.1f} GFLOP/s ({100 * fraction:.0f}%)"


def markdown(results: dict, command: str) -> str:
    """The figures of one :func:`hot_path.collect` run as markdown tables."""
    cfg = results["settings"]
    lines = [f"Command: `{command}`", "",
             f"Machine: {results['machine']} ({results['cpus']} CPUs, {cfg['threads'] or 'GPU'} torch threads), "
             f"torch {results['torch']}, Python {results['python']}.", "",
             "Flags: " + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sorted(cfg.items())), ""]
    roof = results.get("roofline")
    if roof and roof.get("flops_per_s"):
        lines += [f"Roofline: {roof['kind']}: {roof['flops_per_s'] / 1e9:.1f} GFLOP/s.", ""]
    plan_rows = [k[:-5] for k in results if k.endswith("_plan")]
    shown = {size: hot_path.size_label(size, cfg) for size in plan_rows + ["dino_wm"]}  # dino_wm says its N
    if plan_rows:
        lines += ["| size | B | S x I | wmpc plan | reference plan | speed-up | wmpc peak | reference peak |",
                  "|---|---|---|---|---|---|---|---|"]
        for size in plan_rows:
            r = results[f"{size}_plan"]
            ex = " (extrapolated)" if "extrapolated_from_iterations" in r["ref"] else ""
            lines.append(f"| {shown[size]} | {r['B']} | {r['S']} x {r['I']} | {_s(r['wmpc'])} | {_s(r['ref'])}{ex} | "
                         f"{_x(r['ref'], r['wmpc'])} | {_mb(r['wmpc'])} | {_mb(r['ref'])} |")
            if "wmpc_compiled" in r:  # the same plan with model.predictor.compile=true (CUDA)
                c = r["wmpc_compiled"]
                lines.append(f"| {shown[size]}, `predictor.compile=true` | {r['B']} | {r['S']} x {r['I']} | {_s(c)} | "
                             f"{_s(r['ref'])}{ex} | {_x(r['ref'], c)} | {_mb(c)} | {_mb(r['ref'])} |")
        lines += ["", "| size | B | S | wmpc rollout | reference rollout | speed-up | wmpc rate (of roofline) |",
                  "|---|---|---|---|---|---|---|"]
        for size in plan_rows:
            r = results[f"{size}_rollout"]
            lines.append(f"| {shown[size]} | {r['B']} | {r['S']} | {_s(r['wmpc'])} | {_s(r['ref'])} | "
                         f"{_x(r['ref'], r['wmpc'])} | {_rate(r['wmpc'])} |")
            if "wmpc_compiled" in r:  # the same rollout with model.predictor.compile=true
                c = r["wmpc_compiled"]
                lines.append(f"| {shown[size]}, `predictor.compile=true` | {r['B']} | {r['S']} | {_s(c)} | "
                             f"{_s(r['ref'])} | {_x(r['ref'], c)} | {_rate(c)} |")
        lines.append("")
    if "memory" in results:
        m = results["memory"]
        lines += [f"Memory bound ({shown['dino_wm']} rollout, S = {m['S']}, budget {m['budget_mb']} MiB):", "",
                  "| | time | peak | candidates per chunk |", "|---|---|---|---|",
                  f"| unchunked | {_s(m['unchunked'])} | {_mb(m['unchunked'])} | {m['S']} |",
                  f"| chunked | {_s(m['chunked'])} | {_mb(m['chunked'])} | {m['chunked'].get('chunk')} |", ""]
    if "planners" in results:
        lines += ["| planner | iterations | rollouts | planner ms/iter | with model ms/iter | overhead | "
                  "rollouts to target (envs) |", "|---|---|---|---|---|---|---|"]
        for name, r in results["planners"].items():
            lines.append(f"| {name} | {r['iterations']} | {r['rollouts']} | {r['planner_ms_per_iter']:.2f} | "
                         f"{r['ms_per_iter']:.1f} | {100 * r['overhead_fraction']:.1f}% | "
                         f"{r['rollouts_to_target']:.0f} ({r['reached']}) |")
        lines.append("")
    if "switches" in results:
        lines += [f"| switch ({shown['dino_wm']} rollout) | time | peak |", "|---|---|---|"]
        lines += [f"| {label.strip()} | {_s(r)} | {_mb(r)} |" for label, r in results["switches"].items()]
        lines.append("")
    lines.append(hot_path.summary(results))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="figures", help="folder of figures.json and figures.md")
    args, rest = ap.parse_known_args(argv)
    hp_args = hot_path.parser().parse_args(rest)
    results = hot_path.collect(hot_path.settings(hp_args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.figures", *argv])
    write_json(out / "figures.json", {**results, "command": command}, indent=1)
    text = markdown(results, command)
    atomic_write(out / "figures.md", lambda tmp: tmp.write_text(text))
    print(f"\nwrote {out / 'figures.json'} and {out / 'figures.md'}")
    print(hot_path.summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
