# The shape of the policy in opa-envoy-plugin's tutorial, in Rego v0 syntax as many existing
# policies are: the JWT is decoded in Rego, guests may read /people, admins may also create
# people (but not themselves). Kept free of sidegate-specific input on purpose.
package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow {
	is_token_valid
	action_allowed
}

is_token_valid {
	io.jwt.verify_hs256(bearer_token, "a-shared-secret-of-at-least-32-bytes")
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed {
	http_request.method == "GET"
	token.payload.role == "guest"
	glob.match("/people", ["/"], http_request.path)
}

action_allowed {
	http_request.method == "GET"
	token.payload.role == "admin"
	startswith(http_request.path, "/people")
}

action_allowed {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

bearer_token := t {
	[_, t] := split(http_request.headers.authorization, " ")
}

token := {"payload": payload} {
	[_, payload, _] := io.jwt.decode(bearer_token)
}
