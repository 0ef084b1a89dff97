"""What the Check service records about an exception no stage turned into an answer.

Such an exception is a bug or a wait that ran out of the call's time; either way the request is
answered per ``on_error`` (extauthz/service.py). The log names the stage and the innermost frame
but never the exception's message: messages can quote request data, tokens included.
"""

from __future__ import annotations

import os

from prometheus_client import Counter

CHECK_FAILURES = Counter(
    "sidegate_authz_check_failures_total",
    "Checks whose handling raised (a bug or a deadline), answered per on_error; by stage "
    "(request, identity, input, policy, response) and reason (exception class or deadline)",
    ["stage", "reason"],
)


class Stage:
    """The step a Check is in, so that a failure names where it happened."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "request"


def describe(exc: BaseException) -> str:
    """``file.py:line in function`` of the frame that raised, without the message."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
