"""``wmpc encode``."""
from mpc.data import encode_command as main  # noqa: F401
