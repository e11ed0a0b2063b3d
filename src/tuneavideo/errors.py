"""The one base class of the errors a user can fix; the command line prints them as one ``error:`` line."""


class TuneAVideoError(ValueError):
    """A bad input, file or setting: the message is one line naming the problem and the fix."""
