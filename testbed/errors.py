"""Errors the command line turns into one clear line and an exit code."""


class TestbedError(Exception):
    """A failure with a message meant for the user (no traceback). ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(TestbedError):
    """Bad input: a flag, a config file or an option the user gave. Exit code 2."""

    exit_code = 2


class BrokerError(TestbedError):
    """A broker that cannot be started, reached or used."""

    exit_code = 1


class StageError(TestbedError):
    """A stage process failed (its message says which and why)."""

    exit_code = 1
