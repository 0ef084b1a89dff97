# Tests mock individual input fields (`with input.parsed_path as ...`): rego-cpp 1.5.2
# crashes when a whole-input mock (`with input as {...}`) meets a rule that calls
# another rule; see docs/policy.md.
package envoy.authz_test

import rego.v1

import data.envoy.authz

test_plain_path_allowed if {
	authz.allow with input.parsed_path as ["hello"]
}

test_root_allowed if {
	authz.allow with input.parsed_path as [""]
}

test_deny_path_denied if {
	not authz.allow with input.parsed_path as ["deny"]
}

test_deny_subpath_denied_even_for_admins if {
	not authz.allow with input.parsed_path as ["deny", "anything"]
		with input.identity.roles as ["admin"]
}

test_admin_without_role_denied if {
	not authz.allow with input.parsed_path as ["admin"]
		with input.identity.roles as ["user"]
}

test_admin_subpath_without_identity_denied if {
	not authz.allow with input.parsed_path as ["admin", "users"]
}

test_admin_with_role_allowed if {
	authz.allow with input.parsed_path as ["admin", "users"]
		with input.identity.roles as ["admin"]
}
