# Role- and scope-based access per method and path.
#
# Select it for a route with context_extensions `policy: rbac/decision` (401/403 with a JSON
# body) or `policy: rbac/allow` (a plain boolean). Edit `routes` to describe your API: a
# request is allowed when one matching route is public, or names one of the caller's roles,
# or one of the caller's OAuth scopes. Paths are globs over "/"-separated segments:
# "*" is one segment, "**" any number of them. Unlisted paths are denied.
package rbac

import rego.v1

routes := [
	{"methods": ["GET"], "paths": ["/health", "/docs/**"], "public": true},
	{
		"methods": ["GET", "HEAD"],
		"paths": ["/orders", "/orders/*"],
		"roles": ["viewer", "editor", "admin"],
		"scopes": ["orders:read"],
	},
	{
		"methods": ["POST", "PUT", "PATCH"],
		"paths": ["/orders", "/orders/*"],
		"roles": ["editor", "admin"],
		"scopes": ["orders:write"],
	},
	{"methods": ["DELETE"], "paths": ["/orders/*"], "roles": ["admin"]},
	{"methods": ["*"], "paths": ["/admin/**"], "roles": ["admin"]},
]

# The decoded path (opa-envoy-plugin's parsed_path: %2F decoded, leading slashes collapsed).
request_path := concat("/", array.concat([""], input.parsed_path))

method := input.attributes.request.http.method

# Only the identity fields this policy decides on are read (never the whole input.identity with
# its claims): sidegate then hands the engine just these fields, and caches a decision per role
# rather than per token.
roles := object.get(input, ["identity", "roles"], [])

scopes := object.get(input, ["identity", "scopes"], [])

matching contains route if {
	some route in routes
	method_matches(route)
	some pattern in route.paths
	glob.match(pattern, ["/"], request_path)
}

method_matches(route) if "*" in route.methods

method_matches(route) if method in route.methods

granted if {
	some route in matching
	object.get(route, "public", false) == true
}

granted if {
	some route in matching
	some role in roles
	role in object.get(route, "roles", [])
}

granted if {
	some route in matching
	some scope in scopes
	scope in object.get(route, "scopes", [])
}

default allow := false

allow if granted

authenticated if object.get(input, ["identity", "authenticated"], false) == true

default decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\"}",
}

decision := {"allowed": true} if granted

decision := {
	"allowed": false,
	"http_status": 401,
	"headers": {"content-type": "application/json", "www-authenticate": "Bearer"},
	"body": "{\"error\":\"unauthenticated\"}",
} if {
	not granted
	not authenticated
}
