"""Errors the ext_authz package raises for operator mistakes (bad policy, key file, settings)."""


class AuthzConfigError(Exception):
    """Something the authz config references is wrong; the message names the file and problem.

    ``sidegate serve`` exits non-zero with it at start-up; a reload logs it and keeps the old state.
    """
