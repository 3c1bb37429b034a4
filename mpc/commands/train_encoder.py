"""``wmpc train-encoder``."""
from mpc.train_encoder import train_encoder_command as main  # noqa: F401
