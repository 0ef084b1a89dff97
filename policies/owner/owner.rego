# Owner access: a user reads and edits only their own record, admins everyone's.
#
#   GET|PUT|PATCH /users/{id}   allowed when {id} is the caller's subject, or for role "admin"
#   GET /users                  (the list) admins only
#   DELETE /users/{id}          admins only
#
# Select it with context_extensions `policy: owner/allow`. The subject is the verified
# identity's (input.identity.subject), never a header the client could set.
package owner

import rego.v1

method := input.attributes.request.http.method

subject := object.get(input, ["identity", "subject"], "")

is_admin if "admin" in object.get(input, ["identity", "roles"], [])

own_record if {
	input.parsed_path[0] == "users"
	count(input.parsed_path) == 2
	subject != ""
	input.parsed_path[1] == subject
}

default allow := false

allow if is_admin

allow if {
	method in {"GET", "PUT", "PATCH"}
	own_record
}
