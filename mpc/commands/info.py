"""``wmpc info``: versions, the device, every encoder backend and whether its weights are available."""
from __future__ import annotations

import argparse
import os
import platform

from mpc._io import package_version
from mpc.commands.cli import commands


def main(argv: list[str]) -> int:
    """``wmpc info``: versions, device, encoder backends and whether their weights are available."""
    argparse.ArgumentParser(prog="wmpc info", description=main.__doc__).parse_args(argv)
    import numpy
    import torch

    import encoders
    import envs

    print(f"wmpc {package_version()}  (python {platform.python_version()}, {platform.system()} {platform.machine()})")
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
    print("commands: " + ", ".join(sorted(commands())))
    return 0
