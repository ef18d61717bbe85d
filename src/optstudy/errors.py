"""Errors users can fix themselves: the entry points print them as one line and exit non-zero."""


class OptstudyError(Exception):
    """Base class of expected, user-fixable errors (bad config, missing or corrupt data)."""


class ConfigError(OptstudyError):
    """A configuration value is invalid."""


class DataError(OptstudyError):
    """A data set is missing, unreadable or does not match what its config declares."""
