"""Who made a change from the command line, as registries and release logs record it."""

import getpass


def cli_operator() -> str:
    """``cli:USER``: the CLI user, so a flip or a promotion by hand is told apart from a run's."""
    return f"cli:{getpass.getuser()}"
