"""The ``wmpc`` command.

Subcommands are found through the entry-point group ``wmpc.commands`` (see pyproject.toml), so
``benchmarks`` registers ``bench`` without ``mpc`` importing it, and any package can add a command
the same way. Each entry point is a function ``fn(argv: list[str]) -> int | None``; most are hydra
apps built with :func:`hydra_command`, so every config value is overridable as ``key=value``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def _version() -> str:
    try:
        return metadata.version("wmpc")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _commands() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group="wmpc.commands")}


def hydra_command(config_name: str, task: Callable, argv: list[str], prog: str) -> int:
    """Run ``task(cfg)`` as a hydra app over ``configs/<config_name>.yaml`` with ``argv`` overrides.

    Supports everything hydra's command line does (``key=value``, ``+key=value``, ``-m`` multirun,
    ``--cfg job``, ``--help``). Returns 0 on success.
    """
    import hydra
    from omegaconf import DictConfig

    result = {}

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _app(cfg: DictConfig):
        result["value"] = task(cfg)
        return result["value"]

    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        _app()
    finally:
        sys.argv = saved
    return 0


def env_overrides(argv: list[str]) -> list[str]:
    """Let ``env=<x>`` name an env with no ``configs/env/<x>.yaml`` (a gymnasium id, say).

    Such an ``env=<x>`` becomes ``~env +env.name=<x>``: the env is then built with its own defaults
    plus any ``env.<key>=value`` given. Other arguments pass through unchanged.
    """
    out = []
    for arg in argv:
        if arg.startswith("env=") and not (Path(CONFIG_DIR) / "env" / f"{arg[4:]}.yaml").exists():
            out += ["~env", f"+env.name={arg[4:]}"]
        else:
            out.append(arg)
    extra = [a for a in out if a.startswith("env.") and "+env.name=" in " ".join(out)]
    return [a for a in out if a not in extra] + [f"+{a}" for a in extra]


def info_command(argv: list[str]) -> int:
    """``wmpc info``: versions, device, encoder backends and whether their weights are available."""
    argparse.ArgumentParser(prog="wmpc info", description=info_command.__doc__).parse_args(argv)
    import numpy
    import torch

    import encoders
    import envs

    print(f"wmpc {_version()}  (python {platform.python_version()}, {platform.system()} {platform.machine()})")
    print(f"torch {torch.__version__}  numpy {numpy.__version__}")
    if torch.cuda.is_available():
        print(f"device: cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))")
    else:
        print(f"device: cpu ({os.cpu_count()} cores; no CUDA device found)")
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print("\nencoders:")
    status = {row["name"]: row for row in encoders.encoder_status()}
    for name in encoders.list_encoders():
        row = status.get(name)
        if row is None:
            print(f"  {name:24s} ok")
        else:
            mark = row.get("status") or ("weights available" if row["available"] else "no weights")
            print(f"  {name:24s} {mark}: {row['detail']}")
    print("\nenvs: " + ", ".join(envs.list_envs()))
    print("commands: " + ", ".join(sorted(_commands())))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    usage = "wmpc <command> [key=value ...]\n\ncommands:\n" + "\n".join(
        f"  {name}" for name in sorted(commands)) + "\n\n`wmpc <command> --help` shows a command's options."
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("wmpc: model-predictive control in the latent space of a world model\n\nusage: " + usage)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"wmpc {_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        import difflib
        close = difflib.get_close_matches(name, list(commands), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"wmpc: unknown command {name!r}.{hint}\n\nusage: {usage}", file=sys.stderr)
        return 2
    fn = commands[name].load()
    rc = fn(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
