"""The ``wmpc`` command: :mod:`mpc.commands.cli` dispatches, one module per subcommand.

Each subcommand module exposes ``main(argv: list[str]) -> int`` and is registered in the
``wmpc.commands`` entry-point group (pyproject.toml), so any installed package can add a command.
``python -m mpc.commands <command> ...`` runs the same thing as ``wmpc <command> ...``.
"""
