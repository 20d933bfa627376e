"""Errors the CLI turns into one clear line and exit code 2 (no traceback)."""


class UsageError(Exception):
    """Bad input from the user: the message names the bad value and the choices or the fix."""


def choices_error(what: str, value, choices, where: str = "") -> UsageError:
    return UsageError(f"unknown {what} {value!r}{where}; choices: {', '.join(map(str, choices))}")
