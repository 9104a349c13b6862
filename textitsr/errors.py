"""Exception types raised at the boundary where bad input enters.

Every message names the offending file/field and what was expected, so the CLI can print one line
and the app can show it without a traceback.
"""


class TextITSRError(Exception):
    """Base class: anything the CLI/app should report as one readable line."""


class InputError(TextITSRError, ValueError):
    """Bad user-supplied input: a file, a field, a query, an argument."""


class CheckpointError(TextITSRError):
    """A checkpoint is missing, corrupt, or does not match the requested configuration."""


class StoreError(TextITSRError):
    """An archive store is missing, corrupt, empty, or built with another model."""
