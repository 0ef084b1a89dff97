package responses_test

import rego.v1

import data.responses

test_public_path_open if {
	d := responses.decision with input.parsed_path as ["health"]
	d.allowed
}

test_anonymous_gets_401_problem if {
	d := responses.decision with input.parsed_path as ["orders"]
		with input.identity.authenticated as false
	not d.allowed
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer realm=\"api\""
	d.headers["content-type"] == "application/problem+json"
	body := json.unmarshal(d.body)
	body.status == 401
	body.instance == "/orders"
}

test_missing_role_gets_403_naming_it if {
	d := responses.decision with input.parsed_path as ["admin", "users"]
		with input.identity.authenticated as true
		with input.identity.roles as ["user"]
	d.http_status == 403
	json.unmarshal(d.body).detail == "Missing role: admin."
}

test_role_holder_allowed_with_private_cache_header if {
	d := responses.decision with input.parsed_path as ["billing", "invoices"]
		with input.identity.authenticated as true
		with input.identity.roles as ["billing"]
	d.allowed
	d.response_headers_to_add["cache-control"] == "private, no-store"
}

test_authenticated_plain_path_allowed if {
	d := responses.decision with input.parsed_path as ["orders", "1"]
		with input.identity.authenticated as true
	d.allowed
}

test_missing_identity_is_anonymous if {
	d := responses.decision with input.parsed_path as ["orders"]
	d.http_status == 401
}
