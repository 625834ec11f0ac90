"""Service-level errors that routes translate into 4xx answers."""


class NotFoundError(LookupError):
    """The requested record does not exist."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")


class ConflictError(ValueError):
    """The request is valid but clashes with the record's state."""


class InvalidInputError(ValueError):
    """The request is well-formed but a value is not acceptable for this record (a label the event's model
    does not have): a 422 that names what would be accepted."""


class CapacityError(RuntimeError):
    """A bounded resource is full (the live stream readers): the request is refused now and may succeed later."""
