"""What a training run leaves to read: ``config.yaml``, ``train.log``, ``metrics.csv``,
TensorBoard events and loss plots.

:class:`RunLog` is the world-model trainer's log (rank 0 only); :func:`plot_loss_curve` draws the
encoder trainer's ``loss.png``. Every file is written atomically (:mod:`mpc._io`).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from mpc._io import atomic_write

__all__ = ["RunLog", "read_csv", "write_csv", "plot_losses", "plot_loss_curve"]

_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


def read_csv(path: Path) -> list[dict]:
    """Rows of ``metrics.csv`` (``step`` as int, every other non-empty value as float); [] if missing."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "step" else int(v)) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (columns: every key, in order of first appearance) to ``path`` atomically."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]

    def write(p):
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def plot_losses(rows: list[dict], path: Path) -> None:
    """Train and validation loss of ``metrics.csv`` rows against step, saved to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=label, marker="o" if key.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(r.get("train/loss", 1) > 0 for r in rows):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120))
    plt.close(fig)


def plot_loss_curve(path: Path, losses: list[float]) -> None:
    """One loss per step (steps 1, 2, ...), saved to ``path`` (log scale when all are positive)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if min(losses) > 0 else "linear")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)


class RunLog:
    """The run folder's logs from optimizer step ``step`` on (rank 0 of a world-model run).

    Opening writes ``config.yaml``, adds a ``train.log`` handler to the root logger and keeps the
    ``metrics.csv`` rows up to ``step`` (a resumed run drops what was logged after its checkpoint;
    TensorBoard purges those steps too).

    Args:
        run_dir: the run folder (created).
        cfg: the run's config, written resolved to ``config.yaml``.
        step: the step training starts from (0, or the resumed one).
    """

    def __init__(self, run_dir: Path, cfg, step: int):
        from omegaconf import OmegaConf
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = OmegaConf.to_yaml(cfg, resolve=True)
        atomic_write(self.run_dir / "config.yaml", lambda p: p.write_text(text))
        self._file_handler = logging.FileHandler(self.run_dir / "train.log")
        self._file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        self._file_handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._file_handler)
        for name in ("mpc", "encoders"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.INFO)
        self.rows = [r for r in read_csv(self.run_dir / "metrics.csv") if int(r["step"]) <= step]
        self.writer = SummaryWriter(str(self.run_dir), purge_step=step if step else None)

    def log_row(self, row: dict) -> None:
        """Append ``row`` (``step``, ``epoch`` and scalars) to ``metrics.csv`` and TensorBoard."""
        self.rows.append(row)
        write_csv(self.run_dir / "metrics.csv", self.rows)
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.writer.add_scalar(k, v, row["step"])
        self.writer.flush()

    def plot(self) -> None:
        """``loss_curve.png`` of the rows logged so far."""
        plot_losses(self.rows, self.run_dir / "loss_curve.png")

    def close(self) -> None:
        """Close the TensorBoard writer and detach the ``train.log`` handler."""
        self.writer.close()
        logging.getLogger().removeHandler(self._file_handler)
        self._file_handler.close()
