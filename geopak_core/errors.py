"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class GeopakError(Exception):
    """A mistake in the user's input (bad path, bad config, missing key) rather than a bug."""


class ConfigError(GeopakError):
    """A configuration value that fails validation; the message names the key and the value."""

    def __init__(self, key: str, value: object, reason: str):
        self.key = key
        self.value = value
        super().__init__(f"config key '{key}' = {value!r}: {reason}")
