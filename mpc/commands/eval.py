"""``wmpc eval``."""
from mpc.evaluate import eval_command as main  # noqa: F401
