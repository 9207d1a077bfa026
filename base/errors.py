"""One base class for the errors a user can fix.

A bad config, missing or corrupt data, an unusable checkpoint, a model a script cannot explain, a
training run that diverged: each is a subclass of :class:`UserError`, defined beside the code that
raises it (``ConfigError`` in core/config.py, ``DatasetError`` in datasets.py, ...). The scripts
turn every UserError into one line, ``error: <message>``, and exit 1 (``aux.exit_on_user_errors``).
The message says what was wrong and what to do.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in its message."""
