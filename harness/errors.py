"""Errors the CLI turns into one clear line and exit code 2 (no traceback)."""


class UsageError(Exception):
    """Bad input from the user: the message names the bad value and the choices or the fix."""


def choices_error(what: str, value, choices, where: str = "") -> UsageError:
    return UsageError(f"unknown {what} {value!r}{where}; choices: {', '.join(map(str, choices))}")


class Interrupted(KeyboardInterrupt):
    """A SIGTERM (kill, a job scheduler, a CI timeout) unwinding the harness like Ctrl-C does."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def interruption(e: BaseException) -> str:
    """The signal behind a KeyboardInterrupt, as a record names it."""
    return getattr(e, "args", [None])[0] if isinstance(e, Interrupted) else "SIGINT (Ctrl-C)"
