"""The project's base exception, below every other module so that each layer can raise it.

Every error a user can cause and fix (a missing folder, a bad setting, a run that does not fit
an index) is a :class:`LatentsearchError`; anything else is a bug. The command line shows the
first kind as one line and lets the second surface with its traceback.

Messages speak in library terms: a setting is named as the Python parameter or config field it
is (``label_fraction``), in backticks where the message names it mid-sentence
(```resume=True```), and the command line swaps in its own flag (``--label-fraction``,
``--resume``) when it prints them.
"""

from __future__ import annotations


class LatentsearchError(ValueError):
    """Bad input or state a user can fix; the message says what to do.

    A ``ValueError``, so code that caught ``ValueError`` before this class existed still works.
    """


class ConfigError(LatentsearchError):
    """A setting outside the values it may take.

    Attributes:
        field: The setting's name (a config field or a function's parameter). The message
            starts with it, so the command line can name its flag instead.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
