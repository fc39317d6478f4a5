"""The error a user can fix, and what a Java exception from Spark says about its causes."""

from __future__ import annotations

from py4j.protocol import Py4JError, Py4JNetworkError

# what a background thread's call into the driver's JVM raises once the JVM or its context is gone:
# Py4J's errors, and the ConnectionRefusedError of a new connection to a JVM that ended
JVM_CALL_ENDED = (Py4JError, ConnectionError)


class UserError(Exception):
    """A problem with the input or the settings, reported as one line and exit code 2."""


class DamagedFileError(UserError):
    """A file sgns-spark wrote (or a published version it reads) that cannot be read or parsed.

    Parameters
    ----------
    path : str
        The file's URI.
    reason : str
        Why it cannot be read.
    remedy : str
        What the user can do about it.
    """

    def __init__(self, path: str, reason: str, remedy: str):
        super().__init__(f"{path} cannot be read ({reason}): it was changed outside sgns-spark or damaged; {remedy}")
        self.path, self.reason = path, reason


class JvmEndedError(UserError):
    """The driver's JVM ended under the job: Spark can do nothing more, not even stop."""


def java_causes(error: BaseException) -> list[tuple[str, str]]:
    """``(class name, message)`` of a Py4J error's Java exception and each of its causes, outermost
    first; empty for an error that did not come from the JVM. PySpark turns some Java exceptions
    into its own (an ``IllegalArgumentException`` for an unknown host, say), which keep the Java
    one as ``_origin``."""
    causes = []
    throwable = getattr(error, "java_exception", None) or getattr(error, "_origin", None)
    while throwable is not None and len(causes) < 20:
        causes.append((str(throwable.getClass().getName()), str(throwable.getMessage() or "")))
        throwable = throwable.getCause()
    return causes


def python_causes(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling (``__cause__``, else
    ``__context__``), outermost first: PySpark raises its own exception over an ``OSError`` in
    places (a broadcast that spark.local.dir has no room for is a ``PicklingError``)."""
    causes: list[BaseException] = []
    while error is not None and error not in causes:
        causes.append(error)
        error = error.__cause__ or error.__context__
    return causes


def jvm_gone(error: BaseException) -> bool:
    """Whether `error` came of the driver's JVM ending under the job (killed, most often by the
    system for want of memory): Py4J's connection to it broke, or could not be made again."""
    return any(isinstance(cause, Py4JNetworkError | ConnectionRefusedError) for cause in python_causes(error))
