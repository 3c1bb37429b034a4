"""The ``wmpc`` command.

Subcommands are found through the entry-point group ``wmpc.commands`` (see pyproject.toml), so
``benchmarks`` registers ``bench`` without ``mpc`` importing it, and any package can add a command
the same way. Each entry point is a function ``fn(argv: list[str]) -> int | None``; most are hydra
apps built with :func:`hydra_command`, so every config value is overridable as ``key=value``.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

from mpc._config import config_dir
from mpc._io import package_version

CONFIG_DIR = str(config_dir())


def commands() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group="wmpc.commands")}


def _safe_name(text: str) -> str:
    """A folder-name-safe version of an env name or gymnasium id (``pkg.mod:Id-v0`` -> ``pkg.mod_Id-v0``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text)) or "run"


def _default_data(env_name):
    """``data`` when it is not given: ``data/<env>`` for ``env=<env>``; without either, an error."""
    if env_name in (None, "None", ""):
        raise ValueError("pass data=<dataset folder written by `wmpc collect`> (or env=<name> for "
                         "data/<name>)")
    return f"data/{_safe_name(env_name)}"


def _dataset_env(data) -> str:
    """The env a dataset folder holds (from its dataset.json), folder-name-safe; else its folder name."""
    from mpc._io import read_json
    from mpc.data.format import META_FILE

    meta = read_json(Path(str(data)) / META_FILE)
    env = meta.get("env") if isinstance(meta, dict) else None
    return _safe_name(env or Path(str(data)).name)


def _checkpoint_env(checkpoint, env_name) -> str:
    """The env of an eval run: ``env=`` when given, else the one a checkpoint stores, else ``eval``."""
    if env_name not in (None, "None", ""):
        return _safe_name(env_name)
    if checkpoint not in (None, "None", ""):
        try:
            from mpc.checkpoint import read_header

            env = (read_header(str(checkpoint)).get("task") or {}).get("env")
            if env:
                return _safe_name(env)
        except (OSError, ValueError):
            pass  # the command itself reports a bad checkpoint
    return "eval"


def register_resolvers() -> None:
    """The ``wmpc_*`` OmegaConf resolvers the shipped configs use (idempotent)."""
    from omegaconf import OmegaConf

    for name, fn in (("wmpc_default_data", _default_data), ("wmpc_dataset_env", _dataset_env),
                     ("wmpc_checkpoint_env", _checkpoint_env)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def hydra_command(config_name: str, task: Callable, argv: list[str], prog: str) -> int:
    """Run ``task(cfg)`` as a hydra app over ``configs/<config_name>.yaml`` with ``argv`` overrides.

    Supports everything hydra's command line does (``key=value``, ``+key=value``, ``-m`` multirun,
    ``--cfg job``, ``--help``). Returns 0 on success.
    """
    import hydra
    from omegaconf import DictConfig

    register_resolvers()
    result = {}

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _app(cfg: DictConfig):
        try:
            result["value"] = task(cfg)
        except Exception as e:  # noqa: BLE001 - re-raised below, after hydra's job book-keeping
            result.setdefault("error", e)
        return result.get("value")

    saved, saved_full = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [prog, *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # hydra re-raises; main() prints one line (or the traceback)
    try:
        _app()
        if "error" in result:
            raise result["error"]
    finally:
        sys.argv = saved
        if saved_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full
    return 0


# errors that mean "the user asked for something wrong": their message says what to do
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
                KeyError, TypeError)


def _user_error_types() -> tuple[type, ...]:
    types = list(_USER_ERRORS)
    try:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException
        types += [HydraException, OmegaConfBaseException]
    except ImportError:  # pragma: no cover
        pass
    from mpc._io import LockHeld
    return (*types, LockHeld)


def report_error(prog: str, err: BaseException) -> int:
    """Print ``err`` as one ``wmpc <command>: error: ...`` message on stderr; returns the exit code.

    User errors (bad values, missing files, config mistakes) print their message alone; anything
    else also names its type and points at ``--debug`` for the traceback.
    """
    message = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    message = message.split("\nConfig search path:")[0].rstrip()  # hydra's search path: noise here
    head, sep, options = message.partition("\n\nAvailable options in ")
    if sep:  # hydra lists the choices one per line: fold them into the line
        group, _, names = options.partition(":")
        message = f"{head}; available {group.strip(chr(39))} configs: {', '.join(names.split())}"
    if isinstance(err, _user_error_types()):
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    print(f"{prog}: error: {type(err).__name__}: {message}\n(run the same command with --debug for the "
          "traceback)", file=sys.stderr)
    return 1


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    registered = commands()
    usage = "wmpc <command> [key=value ...]\n\ncommands:\n" + "\n".join(
        f"  {name}" for name in sorted(registered)) + "\n\n`wmpc <command> --help` shows a command's options; `--debug` shows the traceback of an error."
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("wmpc: model-predictive control in the latent space of a world model\n\nusage: " + usage)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"wmpc {package_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in registered:
        import difflib
        close = difflib.get_close_matches(name, list(registered), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"wmpc: unknown command {name!r}.{hint}\n\nusage: {usage}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    rest = [a for a in rest if a != "--debug"]
    prog = f"wmpc {name}"
    try:
        fn = registered[name].load()
        rc = fn(rest)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        return report_error(prog, e)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
