"""Training: world models on cached latents, and trainable encoders on frames.

- :mod:`~mpc.training.trainer`: :class:`Trainer` and :func:`train` (``wmpc train``).
- :mod:`~mpc.training.state`: the trainer's checkpoints (``train_state.pt``, model files; resume).
- :mod:`~mpc.training.assembly`: config -> encoder (JEPA pre-training, latent cache) and world model.
- :mod:`~mpc.training.distributed`: :class:`DistContext`, :func:`setup_distributed` (torchrun / DDP).
- :mod:`~mpc.training.schedule`: LR schedules, RNG state save/restore, seeding.
- :mod:`~mpc.training.run_log`: ``config.yaml``, ``train.log``, ``metrics.csv``, TensorBoard, loss plots.
- :mod:`~mpc.training.encoder_trainer`: :func:`train_encoder`, :func:`train_jepa` (``wmpc train-encoder``).

The open-loop metric a run reports at its end lives in :mod:`mpc.evaluation.open_loop`.
"""
from mpc.training.distributed import DistContext, setup_distributed
from mpc.training.encoder_trainer import CHECKPOINT_NAME, TRAINABLE, load_frames, train_encoder, train_jepa
from mpc.training.schedule import cosine_schedule
from mpc.training.state import TRAIN_STATE_VERSION
from mpc.training.trainer import Trainer, train

__all__ = ["train", "Trainer", "setup_distributed", "DistContext", "cosine_schedule", "train_encoder",
           "train_jepa", "load_frames", "CHECKPOINT_NAME", "TRAINABLE", "TRAIN_STATE_VERSION"]
