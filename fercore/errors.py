"""The one exception type for problems the user can fix (bad data, bad arguments, bad files)."""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (CLI exit code 2, a message in the app)."""


# What the app shows as a one-line message instead of a traceback: the user's input, or the environment
# (a full disk, a permission, a file that vanished) that the user can fix as well.
SHOWN_AS_ONE_LINE = (UserError, OSError)
