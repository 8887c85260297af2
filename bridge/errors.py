"""One small exception hierarchy. Every message says what went wrong and what to do."""


class BridgeError(Exception):
    """Base class: the message is written for the person or agent who must act on it."""


class SettingsError(BridgeError):
    """A flag or environment variable has a bad value."""


class RedisUnavailable(BridgeError):
    """Redis cannot be reached (or stopped answering)."""


class RedisRefused(BridgeError):
    """Redis answered but turned us away (password, ACL, TLS): retrying cannot fix it."""


class NameTaken(BridgeError):
    """Another live participant holds this name in the room."""


class MessageRejected(BridgeError):
    """A message was refused before it was logged: bad recipient, empty or oversized text."""


class TaskRefused(BridgeError):
    """A change to the room's task board was refused: a bad value, a limit, a task that waits
    for unfinished ones, or one somebody else holds."""


class TaskTaken(TaskRefused):
    """A claim lost: the task already has an assignee (``holder``)."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class ClaimRefused(BridgeError):
    """A file claim was refused: a bad path, a limit, or another agent's claim over it."""


class ClaimConflict(ClaimRefused):
    """A claim overlaps another agent's (``holder``) exclusive claim, or an exclusive one
    overlaps theirs."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder
