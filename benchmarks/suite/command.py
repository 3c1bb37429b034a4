"""``wmpc bench``: the command line of the suite (shorthands -> hydra overrides -> :func:`run_suite`)."""
from __future__ import annotations

import re

from benchmarks.suite.runner import run_suite

__all__ = ["translate_argv", "bench_command", "main"]

_SELECT = re.compile(r"^(env|encoder|planner)=(.*)$")


def translate_argv(argv: list[str]) -> list[str]:
    """Command-line shorthands -> hydra overrides.

    ``suite=X`` picks the config group choice ``bench=X`` (configs/bench/X.yaml); ``env=``,
    ``encoder=`` and ``planner=`` become ``select.<key>=`` (they restrict the suite to those cells;
    ``configs/env`` etc. are not composed by ``wmpc bench``). A comma list is one run over those
    cells, or one job each under ``-m``. ``env=`` may also name an env the suite does not list
    (a wmpc env or a gymnasium id ``pkg.mod:Name-v0``): it borrows the first env's data and
    evaluation settings.
    """
    out = []
    sweep = any(a in ("-m", "--multirun") for a in argv)
    for a in argv:
        if a.startswith("suite="):
            a = "bench=" + a[len("suite="):]
        m = _SELECT.match(a)
        if m:
            value = m.group(2)
            if "," in value and not sweep and not value.startswith(("'", '"')):
                value = f"'{value}'"  # one run over several cells, not a hydra sweep
            a = f"select.{m.group(1)}={value}"
        out.append(a)
    return out


def bench_command(argv: list[str]) -> int:
    """``wmpc bench suite=<quick|standard|dino_wm|generalization|risk|budget> [env=..] [encoder=..]
    [planner=..] [out=DIR]`` (hydra; ``-m`` sweeps)."""
    from mpc.commands.cli import hydra_command

    def task(cfg):
        report = run_suite(cfg)
        print(f"report: {report}")
        return report

    return hydra_command("bench", task, translate_argv(argv), prog="wmpc bench")


main = bench_command
