"""Files on disk: atomic writes, JSON, folder locks. The only copy of each in ``mpc`` and ``benchmarks``.

Every file wmpc writes goes to a temporary name in the target's folder and is moved onto the target
with one ``os.replace``, so a reader (or a run killed with ``kill -9``) sees either the old file or
the new one, never a torn one. Temporary names are ``.<stem>.<pid>.tmp<suffix>`` (the suffix is kept
so format-sniffing writers such as imageio and matplotlib still work); :func:`remove_temp_files`
clears the leftovers of interrupted writes, and those of safetensors, which writes its own temporary
``.tmpXXXXXX`` beside a file before renaming it (a run killed at that moment leaves it behind).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

__all__ = ["TMP_MARK", "temp_path", "atomic_path", "atomic_write", "write_json", "read_json",
           "json_default", "is_temp_file", "remove_temp_files", "LockHeld", "folder_lock", "package_version",
           "save_module", "load_module"]

TMP_MARK = ".tmp"
_TEMP = re.compile(r"^\..*\.tmp|^\.tmp[A-Za-z0-9]{6}$")  # ours (temp_path), or a library's (Rust tempfile)


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary sibling of ``path`` used while it is written: ``.<stem>.<pid>.tmp<suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}{TMP_MARK}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one ``os.replace``.

    The parent folder is created. On any error the temporary file is removed and ``path`` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically. Returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays, paths and other ``.item()``-ables."""
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, data, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON (numpy values converted) to ``path`` atomically. Returns ``path``."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike, default=None):
    """The JSON in ``path``, or ``default`` when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def is_temp_file(name: str) -> bool:
    """Whether a file name is a temporary one: :func:`temp_path`'s ``.<stem>.<pid>.tmp<suffix>``, or the
    ``.tmpXXXXXX`` safetensors writes beside a file before renaming it."""
    return bool(_TEMP.match(name))


def remove_temp_files(folder: str | os.PathLike) -> int:
    """Delete leftovers of interrupted atomic writes in ``folder``. Returns how many were removed."""
    folder = Path(folder)
    n = 0
    for p in folder.glob(".*"):
        if p.is_file() and is_temp_file(p.name):
            p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", n, folder)
    return n


class LockHeld(RuntimeError):
    """Another process holds a folder lock that was asked for without waiting."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "a job", *, wait: bool = False,
                name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/<name>`` (the OS frees it even after ``kill -9``).

    Args:
        folder: the folder to guard (created if missing).
        what: what the holder is doing, for the error message.
        wait: block until the lock is free (jobs of a multirun sharing one run folder) instead of
            failing at once (a second ``wmpc collect`` into the same dataset).
        name: the lock file's name inside ``folder``.

    Raises:
        LockHeld: ``wait=False`` and another process holds the lock.
        OSError: the file system cannot lock files (some network file systems); wmpc never writes
            without the lock it asked for.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(f"another process is running {what} in {folder}; wait for it to finish "
                           "(or stop it) before starting a second one") from None
        except OSError as e:
            raise OSError(f"cannot lock {folder / name} ({e}); put the folder on a local disk") from e
        yield


def package_version() -> str:
    """The wmpc version: ``mpc.__version__``, the one source (pyproject.toml reads it too)."""
    from mpc import __version__

    return __version__


def save_module(path: str | os.PathLike, module, key: str, header: dict) -> Path:
    """A module's state dict and a JSON ``header`` (under metadata ``key``) in one safetensors file,
    written atomically. Used by the small nets that travel as one file (proprio estimator, temporal
    distance)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {key: json.dumps(header, default=json_default)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_module(path: str | os.PathLike, key: str, fmt: int, what: str, remedy: str, build: Callable[[dict], Any]):
    """The module in a file written by :func:`save_module`: ``build(header)`` makes it, the file's
    tensors fill it. Returns ``(module, header)``.

    Args:
        key: the header's metadata key; fmt: the format number the header must carry.
        what: the kind of file, for messages ("proprio estimator"); remedy: how to make one.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says ``remedy``).
        ValueError: not a readable safetensors file, no header under ``key``, a header that is not
            JSON, another format, or weights that do not fit the header.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}; {remedy}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}; "
                         f"train the {what} again") from e
    if key not in meta:
        raise ValueError(f"{path} has no {what} header; was it written by wmpc's {what}?")
    try:
        head = json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt {what} header: {e}; train the {what} again") from e
    if head.get("format") != fmt:
        raise ValueError(f"{path} has {what} format {head.get('format')}, this wmpc reads {fmt}")
    module = build(head)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the header ({e}); the file is damaged") from e
    return module, head
