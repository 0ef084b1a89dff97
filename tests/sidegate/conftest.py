"""Fixtures for the process-level tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_global_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main(["serve", ...])`` run in process would configure structlog (cached loggers) onto
    pytest's captured stdout, which is closed after that test: every later log line in the
    session would then raise. Subprocess tests configure their own process as usual."""
    monkeypatch.setattr("sidegate.cli.configure_logging", lambda *args, **kwargs: None)
