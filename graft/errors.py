"""The one exception type a user can cause and fix."""


class GraftError(Exception):
    """A problem with the user's input or files, not a bug in graft.

    The command line prints the message on one line and exits with code 2, without a traceback, so the
    message must say what was wrong (naming the file or value) and how to fix it.
    """

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the last checkpoint was made safe; the message says how to resume.

    A subclass of KeyboardInterrupt, so code that stops on Ctrl-C still stops; the command line prints
    the message as its one line and exits with 130, the shell's code for SIGINT.
    """


class DiskFull(GraftError):
    """The disk (or the user's quota) ran out while graft wrote a file or made a folder.

    :func:`graft.atomic.replacing` raises it after removing its temporary file, so the file it was
    replacing is still the previous whole version: a checkpoint or a cache entry is never half written.
    """
