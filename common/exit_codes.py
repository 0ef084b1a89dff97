"""The exit codes of every ``sidegate`` command: one number per meaning (documented in README).

Shared here because the tool groups of the service packages (``policy``, ``keys``) exit with the
same numbers as the process commands (``serve``, ``check-config``, ``init``).
"""

from __future__ import annotations

OK = 0
# The input is wrong: a config, policy, rule, key or input file, or a check that failed
# (policy tests failing, a decision sidegate could not use, nothing to revoke).
INPUT_ERROR = 1
# The command line is wrong (argparse's own exit code for usage errors).
USAGE = 2
# The input was fine but the process could not run: an address that cannot be bound, a
# dependency that cannot be reached at start-up.
RUNTIME_ERROR = 3
