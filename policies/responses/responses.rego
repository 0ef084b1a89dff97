# An API that answers refusals itself: RFC 9457 problem+json bodies for 401 and 403.
#
#   - public paths are open to everyone;
#   - everything else needs an authenticated caller (else 401 + WWW-Authenticate);
#   - paths listed in `required_roles` also need that role (else 403 naming the role);
#   - allowed responses to authenticated callers are marked private so caches keep out.
#
# Select it with context_extensions `policy: responses/decision`.
package responses

import rego.v1

public := ["/health", "/docs/**"]

required_roles := [
	{"path": "/admin/**", "role": "admin"},
	{"path": "/billing/**", "role": "billing"},
]

request_path := concat("/", array.concat([""], input.parsed_path))

roles := object.get(input, ["identity", "roles"], [])

authenticated if object.get(input, ["identity", "authenticated"], false) == true

is_public if {
	some pattern in public
	glob.match(pattern, ["/"], request_path)
}

missing_roles contains role if {
	some rule in required_roles
	glob.match(rule.path, ["/"], request_path)
	role := rule.role
	not role in roles
}

problem(status, title, detail) := json.marshal({
	"type": "about:blank",
	"title": title,
	"status": status,
	"detail": detail,
	"instance": request_path,
})

decision := {"allowed": true} if is_public

decision := {
	"allowed": false,
	"http_status": 401,
	"headers": {
		"content-type": "application/problem+json",
		"www-authenticate": "Bearer realm=\"api\"",
		"cache-control": "no-store",
	},
	"body": problem(401, "Unauthorized", "This endpoint needs credentials."),
} if {
	not is_public
	not authenticated
}

decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/problem+json", "cache-control": "no-store"},
	# concat, not sprintf: rego-cpp 1.5.2's sprintf("%s") can quote a rule's string value.
	"body": problem(403, "Forbidden", concat("", ["Missing role: ", concat(", ", sort(missing_roles)), "."])),
} if {
	not is_public
	authenticated
	count(missing_roles) > 0
}

decision := {
	"allowed": true,
	"response_headers_to_add": {"cache-control": "private, no-store"},
} if {
	not is_public
	authenticated
	count(missing_roles) == 0
}
