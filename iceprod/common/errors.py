"""Domain errors shared by every process; the REST layer maps them to HTTP codes in one place."""

from __future__ import annotations


class IceProdError(Exception):
    """Base of all errors that carry an HTTP status."""

    code = 500

    def __init__(self, message: str = "", *, quiet: bool = False) -> None:
        super().__init__(message)
        self.message = message or self.__class__.__name__
        self.quiet = quiet
        """An expected answer (an idle pilot's empty claim): logged at DEBUG, not INFO."""


class Invalid(IceProdError):
    """Bad input; the message names the field, and `field` holds its path when known."""

    code = 400

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(IceProdError):
    code = 401


class Forbidden(IceProdError):
    code = 403


class NotFound(IceProdError):
    code = 404


class Conflict(IceProdError):
    code = 409


class BadTransition(Conflict):
    """A status change the state machine does not allow."""

    def __init__(self, old: str | None, new: str) -> None:
        super().__init__(f"bad transition: {old} -> {new}")
        self.old = old
        self.new = new


class UndeclaredField(IceProdError):
    """A filter compares a field whose shape its collection does not declare. Filters are
    built only in ``db/``, from typed parameters, so this is a bug in a repository, never
    the caller's input: a 500 answered as "internal server error" and logged as one ERROR
    line naming the collection and the field."""

    code = 500

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TooLarge(IceProdError):
    code = 413


class Unavailable(IceProdError):
    code = 503


class DuplicateKey(Conflict):
    """A unique index refused an insert."""
