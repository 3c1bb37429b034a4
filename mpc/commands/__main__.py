import sys

from mpc.commands.cli import main

sys.exit(main())
