package tiers_test

import rego.v1

import data.tiers

test_ungated_path_open_to_every_tier if {
	tiers.allow with input.parsed_path as ["orders"]
		with input.identity.tier as "free"
}

test_premium_path_for_premium if {
	tiers.allow with input.parsed_path as ["premium", "charts"]
		with input.identity.tier as "premium"
}

test_premium_path_for_enterprise if {
	tiers.allow with input.parsed_path as ["reports", "q3"]
		with input.identity.tier as "enterprise"
}

test_premium_path_refused_to_default_tier if {
	d := tiers.decision with input.parsed_path as ["premium", "charts"]
		with input.identity.tier as "default"
	not d.allowed
	d.http_status == 403
	d.headers["x-required-tier"] == "premium"
	json.unmarshal(d.body) == {"error": "tier_required", "required_tier": "premium"}
}

test_most_specific_rule_listed_first_wins if {
	d := tiers.decision with input.parsed_path as ["reports", "export", "all"]
		with input.identity.tier as "premium"
	d.headers["x-required-tier"] == "enterprise"
}

test_unknown_tier_ranks_lowest if {
	not tiers.allow with input.parsed_path as ["premium", "x"]
		with input.identity.tier as "platinum-typo"
}

test_missing_identity_is_free_tier if {
	not tiers.allow with input.parsed_path as ["premium", "x"]
}

test_decision_allows_ungated if {
	d := tiers.decision with input.parsed_path as ["health"]
		with input.identity.tier as "free"
	d.allowed
}
