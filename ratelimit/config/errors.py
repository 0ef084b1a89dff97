"""The error a bad rule file raises; its text is envoyproxy/ratelimit's wording."""


class RuleConfigError(Exception):
    """``str()`` is ``"<file>: <problem>"``, the problem worded as envoyproxy/ratelimit words it."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem
