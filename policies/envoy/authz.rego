# The default decision (`envoy/authz/allow`): a small, safe starting point.
#
# - any path whose first segment starts with "deny" is refused (403);
# - /admin... needs the role "admin" on the verified identity;
# - everything else is allowed.
#
# Routes pick a richer policy through Envoy's context_extensions (`policy: rbac/allow`, ...);
# see docs/policy.md.
package envoy.authz

import rego.v1

default allow := false

allow if {
	not denied_path
	not admin_path
}

allow if {
	admin_path
	"admin" in input.identity.roles
}

denied_path if startswith(input.parsed_path[0], "deny")

admin_path if startswith(input.parsed_path[0], "admin")
