"""``wmpc collect``."""
from mpc.data import collect_command as main  # noqa: F401
