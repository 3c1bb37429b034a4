"""``wmpc train``."""
from mpc.train import train_command as main  # noqa: F401
