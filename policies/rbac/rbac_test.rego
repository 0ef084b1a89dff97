package rbac_test

import rego.v1

import data.rbac

test_public_health_without_identity if {
	rbac.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["health"]
}

test_viewer_reads_orders if {
	rbac.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["orders", "42"]
		with input.identity.roles as ["viewer"]
}

test_viewer_cannot_write_orders if {
	not rbac.allow with input.attributes.request.http.method as "POST"
		with input.parsed_path as ["orders"]
		with input.identity.roles as ["viewer"]
}

test_write_scope_creates_orders if {
	rbac.allow with input.attributes.request.http.method as "POST"
		with input.parsed_path as ["orders"]
		with input.identity.scopes as ["orders:write"]
}

test_read_scope_cannot_delete if {
	not rbac.allow with input.attributes.request.http.method as "DELETE"
		with input.parsed_path as ["orders", "42"]
		with input.identity.scopes as ["orders:read", "orders:write"]
}

test_admin_deletes_orders if {
	rbac.allow with input.attributes.request.http.method as "DELETE"
		with input.parsed_path as ["orders", "42"]
		with input.identity.roles as ["admin"]
}

test_admin_area_any_method_for_admins if {
	rbac.allow with input.attributes.request.http.method as "PATCH"
		with input.parsed_path as ["admin", "users", "7"]
		with input.identity.roles as ["admin"]
}

test_admin_area_denied_to_editors if {
	not rbac.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["admin"]
		with input.identity.roles as ["editor"]
}

test_single_segment_glob_does_not_reach_deeper if {
	not rbac.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["orders", "42", "secret"]
		with input.identity.roles as ["viewer"]
}

test_unlisted_path_denied if {
	not rbac.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["other"]
		with input.identity.roles as ["admin"]
}

test_unauthenticated_gets_401 if {
	d := rbac.decision with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["orders"]
		with input.identity.authenticated as false
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer"
}

test_authenticated_without_role_gets_403 if {
	d := rbac.decision with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["orders"]
		with input.identity.authenticated as true
		with input.identity.roles as ["guest"]
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "forbidden"}
}

test_decision_allows_like_allow if {
	d := rbac.decision with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["orders", "1"]
		with input.identity.authenticated as true
		with input.identity.roles as ["viewer"]
	d.allowed
}
