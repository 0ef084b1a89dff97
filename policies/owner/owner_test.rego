package owner_test

import rego.v1

import data.owner

test_user_reads_own_record if {
	owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users", "u-1"]
		with input.identity.subject as "u-1"
}

test_user_updates_own_record if {
	owner.allow with input.attributes.request.http.method as "PATCH"
		with input.parsed_path as ["users", "u-1"]
		with input.identity.subject as "u-1"
}

test_user_cannot_read_someone_else if {
	not owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users", "u-2"]
		with input.identity.subject as "u-1"
}

test_user_cannot_delete_own_record if {
	not owner.allow with input.attributes.request.http.method as "DELETE"
		with input.parsed_path as ["users", "u-1"]
		with input.identity.subject as "u-1"
}

test_user_cannot_list_users if {
	not owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users"]
		with input.identity.subject as "u-1"
}

test_sub_resources_are_not_the_record if {
	not owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users", "u-1", "keys"]
		with input.identity.subject as "u-1"
}

test_anonymous_empty_subject_matches_nothing if {
	not owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users", ""]
		with input.identity.subject as ""
}

test_admin_reads_anyone if {
	owner.allow with input.attributes.request.http.method as "GET"
		with input.parsed_path as ["users", "u-2"]
		with input.identity.subject as "root"
		with input.identity.roles as ["admin"]
}

test_admin_deletes if {
	owner.allow with input.attributes.request.http.method as "DELETE"
		with input.parsed_path as ["users", "u-2"]
		with input.identity.roles as ["admin"]
}
