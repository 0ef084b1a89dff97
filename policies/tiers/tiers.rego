# Tier gating: premium paths for premium callers only.
#
# The tier is the verified identity's (input.identity.tier: from the API key's or token's
# consumer; the same value the rate limiter sees). A caller below the required tier gets a
# 403 whose JSON body and `x-required-tier` header say which tier the path needs.
# Select it with context_extensions `policy: tiers/decision`.
package tiers

import rego.v1

# Tiers in ascending order; a tier may use everything a lower one may.
order := ["free", "default", "premium", "enterprise"]

# Path globs ("*" one segment, "**" any) and the lowest tier allowed on them; first match wins
# when several match, so list specific paths first.
gated := [
	{"path": "/reports/export/**", "tier": "enterprise"},
	{"path": "/reports/**", "tier": "premium"},
	{"path": "/premium/**", "tier": "premium"},
]

request_path := concat("/", array.concat([""], input.parsed_path))

caller_tier := object.get(input, ["identity", "tier"], "free")

# Unknown tiers rank lowest.
rank(tier) := i if {
	some i, name in order
	name == tier
} else := -1

matches contains i if {
	some i, rule in gated
	glob.match(rule.path, ["/"], request_path)
}

required_tier := gated[min(matches)].tier if count(matches) > 0

sufficient if not required_tier

sufficient if rank(caller_tier) >= rank(required_tier)

decision := {"allowed": true} if sufficient

decision := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json", "x-required-tier": required_tier},
	"body": json.marshal({"error": "tier_required", "required_tier": required_tier}),
} if not sufficient

default allow := false

allow if sufficient
