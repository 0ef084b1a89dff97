# One rule per decision shape the table in test_decisions.py exercises, selected per request
# through context_extensions "policy" (cases/<rule>).
package cases

import rego.v1

allow_true := true

allow_false := false

full_allow := {
	"allowed": true,
	"headers": {"x-added": "yes", "x-multi": ["a", "b"]},
	"response_headers_to_add": [{"x-resp": "1"}, {"x-resp": "2"}],
	"request_headers_to_remove": ["x-secret", "x-other"],
	"query_parameters_to_set": {"q": ["1", "2"], "single": "s"},
	"query_parameters_to_remove": ["drop"],
	"dynamic_metadata": {"team": "core", "tier": "gold"},
}

custom_deny := {
	"allowed": false,
	"http_status": 401,
	"body": "{\"error\":\"nope\"}",
	"headers": [{"content-type": "application/json"}, {"set-cookie": ["a=1", "b=2"]}],
	"dynamic_metadata": {"why": "test"},
}

deny_object := {"allowed": false}

# Keys a deny ignores (opa-envoy-plugin applies them on an allow only).
deny_with_allow_keys := {
	"allowed": false,
	"request_headers_to_remove": ["x-secret"],
	"response_headers_to_add": {"x-resp": "1"},
}

dry_run_deny := {"allowed": false, "http_status": 409, "body": "conflict"}

undefined_rule if input.never_present

conflict := 1 if input.parsed_path

conflict := 2 if input.parsed_path

allowed_number := {"allowed": 1}

remove_string := {"allowed": true, "request_headers_to_remove": "x"}

bad_status := {"allowed": false, "http_status": 999}

string_result := "yes"

missing_allowed := {"headers": {"x": "y"}}

# Echoes of the input document, read back by the tests from upstream headers.
echo := {
	"allowed": true,
	"headers": {
		"x-parsed-path": json.marshal(input.parsed_path),
		"x-parsed-query": json.marshal(input.parsed_query),
		"x-parsed-body": json.marshal(object.get(input, "parsed_body", "absent")),
		"x-truncated-body": json.marshal(object.get(input, "truncated_body", "absent")),
		"x-version": json.marshal(input.version),
		"x-principal": object.get(input, "source_principal", ""),
		"x-size": json.marshal(object.get(input.attributes.request.http, "size", 0)),
		"x-host": input.attributes.request.http.host,
		"x-header-seen": object.get(input.attributes.request.http.headers, "x-probe", ""),
	},
}
