# An opa-envoy-plugin policy for a gRPC API, unchanged: it reads the decoded request message.
package envoy.authz

import rego.v1

default allow := false

allowed_names := {"alice", "bob"}

allow if {
	input.parsed_path == ["greeter.v1.Greeter", "SayHello"]
	input.parsed_body.name in allowed_names
}

# Any other method of the service is allowed for business accounts only.
allow if {
	input.parsed_path[0] == "greeter.v1.Greeter"
	input.parsed_path[1] != "SayHello"
	input.parsed_body.kind == "BUSINESS"
}

# Plain HTTP requests on the same listener are not gRPC calls: decided by path alone.
allow if {
	not startswith(input.attributes.request.http.headers["content-type"], "application/grpc")
	input.parsed_path == ["public"]
}
