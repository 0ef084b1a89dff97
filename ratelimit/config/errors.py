"""The error a bad rule file raises; its text is envoyproxy/ratelimit's wording."""


class RuleConfigError(Exception):
    """``str()`` is ``"<file>: <problem>"``, or ``"<file>: line <n>: <problem>"`` when the
    line is known; the problem is worded as envoyproxy/ratelimit words it."""

    def __init__(self, file: str, problem: str, line: int | None = None) -> None:
        where = f"{file}: line {line}" if line is not None else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.problem = problem
        self.line = line
