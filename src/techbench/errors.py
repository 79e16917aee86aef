"""Errors a user can fix by editing their input; the CLI turns them into one message and exit code 2."""


class ConfigError(ValueError):
    """Bad input: names the offending key and, where there is a finite set, the allowed values."""

    def __init__(self, key: str, message: str, allowed: list[str] | None = None, source: str | None = None):
        self.key = key
        self.allowed = allowed
        self.source = source  # where the bad input came from when not the params file (a file, the environment)
        text = f"{key}: {message}"
        if allowed is not None:
            text += f"; allowed: {', '.join(map(str, allowed)) or '(none)'}"
        super().__init__(text)
