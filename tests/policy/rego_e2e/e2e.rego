# Decisions for the end-to-end test through a real Envoy (test_policy_envoy_e2e.py).
package e2e

import rego.v1

default decide := {"allowed": false, "body": "denied by the e2e policy"}

decide := {
	"allowed": false,
	"http_status": 402,
	"body": "{\"error\":\"upgrade required\"}",
	"headers": {
		"content-type": "application/json",
		"x-deny-reason": "premium",
		"set-cookie": ["a=1", "b=2"],
	},
} if input.parsed_path[0] == "premium"

decide := {
	"allowed": true,
	"headers": {"x-added-by-policy": "yes", "x-multi": ["one", "two"]},
	"request_headers_to_remove": ["x-remove-me"],
	"response_headers_to_add": {"x-policy-response": "present"},
	"query_parameters_to_set": {"added": "1"},
	"query_parameters_to_remove": ["drop"],
} if input.parsed_path[0] == "open"

# Selected per route through Envoy's context_extensions.
strict := {
	"allowed": false,
	"http_status": 401,
	"body": "strict route",
	"headers": {"www-authenticate": "Bearer realm=\"e2e\""},
}
