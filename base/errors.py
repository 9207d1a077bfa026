"""One base class for the errors a user can fix, and the one guard that ends a script on them in one line.

A bad config, missing or corrupt data, an unusable checkpoint, a model a script cannot explain, a
training run that diverged: each is a subclass of :class:`UserError`, defined beside the code that
raises it (``ConfigError`` in core/config/, ``DatasetError`` in readers/, ...). The scripts turn every
UserError into one line, ``error: <message>``, and exit 1 (``exit_on_user_errors``); Ctrl-C into one line
that says what was kept and how to go on, and exit 130. The message says what was wrong and what to do.
"""
from __future__ import annotations

import functools
import json
import os
import sys

INTERRUPTED = 130  # the exit status of a script stopped by Ctrl-C (128 + SIGINT), as a shell reports it


class UserError(Exception):
    """A problem with the user's input or environment, explained in its message."""


def exit_on_user_errors(main=None, *, positional: bool = False,
                        interrupted: str = "nothing was written; run the same command again"):
    """Wrap a script's ``main(argv)``: a UserError, an OSError or an unreadable JSON file ends the script with one
    line, ``error: <message>``, and exit status 1, instead of a traceback; so do stray positional arguments (unless
    the script takes some: ``positional=True``). Ctrl-C ends it with one line, ``interrupted: <script>: <what was
    kept and how to go on>`` (``interrupted``), and exit status 130 (files are written atomically: none is left
    half-written)."""
    if main is None:
        return functools.partial(exit_on_user_errors, positional=positional, interrupted=interrupted)

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        if args and len(args[0]) > 1 and not positional:  # absl leaves what is not a --flag in argv
            raise SystemExit(f"error: unexpected arguments {args[0][1:]}: every setting is a --flag (see --help)")
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stdout.flush()
            sys.stderr.write(f"\ninterrupted: {os.path.basename(sys.argv[0])}: {interrupted}\n")
            raise SystemExit(INTERRUPTED) from None
        except UserError as error:
            raise SystemExit(f"error: {error}") from None
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: a JSON file is not valid JSON ({error}); restore or delete it") from None
        except BrokenPipeError:  # the output was piped into a command that stopped reading (head): not an error
            raise SystemExit(0) from None
        except UnicodeDecodeError as error:
            raise SystemExit(f"error: a file that should be text is not UTF-8 ({error.reason})") from None
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            raise SystemExit(f"error: {error.strerror or error}{where}") from None
    return guarded
