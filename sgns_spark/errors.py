"""The error a user can fix: raised with one line naming the problem and the setting to change."""


class UserError(Exception):
    """A problem with the input or the settings, reported as one line and exit code 2."""
