"""The errors lossbench reports to a user as one line (never a traceback)."""


class LossbenchError(Exception):
    """A user-facing error: the message says what was wrong, what is allowed and how to fix it."""


class ConfigError(LossbenchError):
    """An invalid configuration, detected before training."""


class DataError(LossbenchError):
    """A dataset that cannot be found, read or built as asked."""
