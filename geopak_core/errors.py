"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class GeopakError(Exception):
    """A mistake in the user's input (bad path, bad config, missing key) rather than a bug."""


class ConfigError(GeopakError):
    """A configuration value that fails validation; the message names the key and the value."""

    def __init__(self, key: str, value: object, reason: str):
        self.key = key
        self.value = value
        super().__init__(f"config key '{key}' = {value!r}: {reason}")


def not_a_file(path: object, what: str) -> str:
    """The one-line message for a path that should be an existing file: "not found", or that it
    is a folder or some other thing (``/dev/null``, a pipe): a user who passes one must not be
    told it does not exist."""
    from pathlib import Path

    p = Path(str(path))
    if p.is_dir():
        return f"{what} {path} is a folder, not a file"
    if p.exists():
        return f"{what} {path} is not a regular file"
    return f"{what} not found: {path}"


def os_error_line(exc: OSError) -> str:
    """One line for an error of the machine rather than of the input (full disk, read-only or
    missing folder, permission denied), naming the file it concerns: what the CLIs print
    instead of a traceback."""
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    hint = {
        28: "; free some space and run the same command again (it resumes)",
        30: "; the folder is read-only: choose a writable one",
        13: "; check the folder's permissions",
        122: "; free some quota and run the same command again (it resumes)",
    }.get(exc.errno or 0, "")
    return f"{what}: {where}{hint}" if where else f"{what}{hint}"
