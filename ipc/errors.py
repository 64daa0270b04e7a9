"""corosync's ``cs_error_t``: the result code of every client call, and the exception that carries it.

Values and symbolic names are corosync's, so that a user reading ``CS_ERR_TRY_AGAIN`` in a log or
a tool's output knows what it means, and so that numeric codes on the wire match.
"""

from __future__ import annotations

import enum


class CsErrorCode(enum.IntEnum):
    """``cs_error_t``: 1 is success, everything else a reason for failure."""

    CS_OK = 1
    CS_ERR_LIBRARY = 2
    CS_ERR_VERSION = 3
    CS_ERR_INIT = 4
    CS_ERR_TIMEOUT = 5
    CS_ERR_TRY_AGAIN = 6
    CS_ERR_INVALID_PARAM = 7
    CS_ERR_NO_MEMORY = 8
    CS_ERR_BAD_HANDLE = 9
    CS_ERR_BUSY = 10
    CS_ERR_ACCESS = 11
    CS_ERR_NOT_EXIST = 12
    CS_ERR_NAME_TOO_LONG = 13
    CS_ERR_EXIST = 14
    CS_ERR_NO_SPACE = 15
    CS_ERR_INTERRUPT = 16
    CS_ERR_NAME_NOT_FOUND = 17
    CS_ERR_NO_RESOURCES = 18
    CS_ERR_NOT_SUPPORTED = 19
    CS_ERR_BAD_OPERATION = 20
    CS_ERR_FAILED_OPERATION = 21
    CS_ERR_MESSAGE_ERROR = 22
    CS_ERR_QUEUE_FULL = 23
    CS_ERR_QUEUE_NOT_AVAILABLE = 24
    CS_ERR_BAD_FLAGS = 25
    CS_ERR_TOO_BIG = 26
    CS_ERR_NO_SECTIONS = 27
    CS_ERR_CONTEXT_NOT_FOUND = 28
    CS_ERR_TOO_MANY_GROUPS = 30
    CS_ERR_SECURITY = 100


# corosync spells them as bare constants; keep that spelling available
CS_OK = CsErrorCode.CS_OK
CS_ERR_LIBRARY = CsErrorCode.CS_ERR_LIBRARY
CS_ERR_VERSION = CsErrorCode.CS_ERR_VERSION
CS_ERR_INIT = CsErrorCode.CS_ERR_INIT
CS_ERR_TIMEOUT = CsErrorCode.CS_ERR_TIMEOUT
CS_ERR_TRY_AGAIN = CsErrorCode.CS_ERR_TRY_AGAIN
CS_ERR_INVALID_PARAM = CsErrorCode.CS_ERR_INVALID_PARAM
CS_ERR_NO_MEMORY = CsErrorCode.CS_ERR_NO_MEMORY
CS_ERR_BAD_HANDLE = CsErrorCode.CS_ERR_BAD_HANDLE
CS_ERR_BUSY = CsErrorCode.CS_ERR_BUSY
CS_ERR_ACCESS = CsErrorCode.CS_ERR_ACCESS
CS_ERR_NOT_EXIST = CsErrorCode.CS_ERR_NOT_EXIST
CS_ERR_NAME_TOO_LONG = CsErrorCode.CS_ERR_NAME_TOO_LONG
CS_ERR_EXIST = CsErrorCode.CS_ERR_EXIST
CS_ERR_NO_SPACE = CsErrorCode.CS_ERR_NO_SPACE
CS_ERR_INTERRUPT = CsErrorCode.CS_ERR_INTERRUPT
CS_ERR_NAME_NOT_FOUND = CsErrorCode.CS_ERR_NAME_NOT_FOUND
CS_ERR_NO_RESOURCES = CsErrorCode.CS_ERR_NO_RESOURCES
CS_ERR_NOT_SUPPORTED = CsErrorCode.CS_ERR_NOT_SUPPORTED
CS_ERR_BAD_OPERATION = CsErrorCode.CS_ERR_BAD_OPERATION
CS_ERR_FAILED_OPERATION = CsErrorCode.CS_ERR_FAILED_OPERATION
CS_ERR_MESSAGE_ERROR = CsErrorCode.CS_ERR_MESSAGE_ERROR
CS_ERR_QUEUE_FULL = CsErrorCode.CS_ERR_QUEUE_FULL
CS_ERR_QUEUE_NOT_AVAILABLE = CsErrorCode.CS_ERR_QUEUE_NOT_AVAILABLE
CS_ERR_BAD_FLAGS = CsErrorCode.CS_ERR_BAD_FLAGS
CS_ERR_TOO_BIG = CsErrorCode.CS_ERR_TOO_BIG
CS_ERR_NO_SECTIONS = CsErrorCode.CS_ERR_NO_SECTIONS
CS_ERR_CONTEXT_NOT_FOUND = CsErrorCode.CS_ERR_CONTEXT_NOT_FOUND
CS_ERR_TOO_MANY_GROUPS = CsErrorCode.CS_ERR_TOO_MANY_GROUPS
CS_ERR_SECURITY = CsErrorCode.CS_ERR_SECURITY


def cs_strerror(code: int) -> str:
    """The symbolic name of a ``cs_error_t`` value, as corosync's ``cs_strerror`` returns it."""
    try:
        return CsErrorCode(code).name
    except ValueError:
        return f"CS_ERR_UNKNOWN({code})"


class CsError(Exception):
    """A failed client call: ``code`` is the ``cs_error_t``, the message says what failed and where."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code: int = int(code)
        self.detail = detail
        name = cs_strerror(code)
        super().__init__(f"{name}: {detail}" if detail else name)

    @property
    def name(self) -> str:
        """The symbolic name of ``code``."""
        return cs_strerror(self.code)
