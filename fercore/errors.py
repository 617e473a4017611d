"""The one exception type for problems the user can fix (bad data, bad arguments, bad files)."""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (CLI exit code 2, a message in the app)."""
