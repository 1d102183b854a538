"""The one exception family of ocdspy. The CLI turns each into one red line and an exit code."""

from __future__ import annotations


class OcdspyError(Exception):
    """An expected failure: bad input, bad configuration, missing data."""

    exit_code = 1

    def __init__(
        self, message: str, *, hint: str | None = None, details: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Further lines of one error (one per invalid setting); each is printed on its own line.
        self.details = details

    def __str__(self) -> str:
        text = "\n  ".join((self.message, *self.details))
        return text if not self.hint else f"{text}\n  hint: {self.hint}"


class ConfigError(OcdspyError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 2


class DataError(OcdspyError):
    """Input data is missing or does not meet the requirements of a stage."""


class ModelError(OcdspyError):
    """A language model could not be set up or called."""


class ProjectBusy(OcdspyError):
    """Another ocdspy process holds the project lock (it is writing in the same project)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a stage: `kept` says, in one line, what is on disk now. The CLI prints it and
    exits 130."""

    def __init__(self, kept: str) -> None:
        super().__init__(kept)
        self.kept = kept
