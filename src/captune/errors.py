"""Error types that the CLI turns into one-line messages and documented exit codes.

Exit codes: 0 success, 1 user error (bad input or config), 2 internal error, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix: the message names the file or key and says how."""


class ConfigError(UserError):
    """A config key is unknown, misspelt, of the wrong type or out of range."""


class DataError(UserError):
    """A dataset, image or predictions file cannot be used as given."""


class ModelError(UserError):
    """Weights, adapters or model settings that cannot be loaded as asked."""
