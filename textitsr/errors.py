"""Exception types raised at the boundary where bad input enters, one per failure family.

Every message names the offending file/field and what was expected, so the CLI can print one line
and the app can show the same line without a traceback:

- `InputError`: a user-supplied argument, query, option or input file (dataset, caption file, scene)
  is wrong: missing, unreadable, truncated, badly encoded, out of range.
- `OutputError`: an output path may not be written (a folder textitsr did not write, an input).
- `StoreError`: an archive store is missing, damaged, hostile or built with another model.
- `StoreLockedError`: another process is writing the store and did not finish in time.
- `CheckpointError`: a checkpoint is missing, corrupt or does not match the configuration.
"""

from __future__ import annotations


class TextITSRError(Exception):
    """Base class: anything the CLI/app should report as one readable line."""


class InputError(TextITSRError, ValueError):
    """Bad user-supplied input: a file, a field, a query, an argument."""


class OutputError(InputError):
    """An output path that must not be written: refusing protects the user's files."""


class CheckpointError(TextITSRError):
    """A checkpoint is missing, corrupt, or does not match the requested configuration."""


class StoreError(TextITSRError):
    """An archive store is missing, corrupt, empty, or built with another model."""


class StoreLockedError(StoreError):
    """Another writer holds the store's lock (a build or ANNEAL update is still running)."""


def one_line(err: BaseException) -> str:
    """The message of `err` on one line: what the CLI prints and the app shows."""
    return " ".join(str(err).split()) or type(err).__name__
