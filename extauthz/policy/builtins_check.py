"""Refuse, at load, every call the embedded engine cannot evaluate; drop ``print``.

rego-cpp (regopy 1.5.2) lacks some OPA builtins, and a call to one of them, or to a function
defined nowhere, evaluates to *undefined* without an error: ``blocked if
net.cidr_contains(...)`` + ``allow if not blocked`` would allow everyone. So before a policy set
is used, every call in it is resolved with the determinism analysis (same tokenizer, same call
finder): a function the modules define, or a builtin the engine itself reports it implements
(``Interpreter.is_builtin``). Anything else is a compile error naming ``file:line:col``.

``print`` is the exception the other way round: rego-cpp implements it by writing to the
process's stdout, between the JSON log lines, with no way to redirect it. sidegate drops every
``print(...)`` call at load (the call becomes ``true``, as a ``print`` never fails a body), so
policies written for opa-envoy-plugin keep working and stdout stays JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import metadata

import regopy

from sidegate.extauthz.policy.determinism import (
    Module,
    defined_functions,
    function_heads,
    read_module,
    references,
    resolve_call,
)
from sidegate.extauthz.policy.input_paths import Unresolvable, closing_bracket, tokenize
from sidegate.extauthz.policy.sources import RegoModule

# OPA's builtins (capabilities of OPA 1.x): a name here that the embedded engine lacks is an
# *unsupported builtin* (use OPA); any other unknown name is a function defined nowhere. The
# embedded engine's own list (``is_builtin``) decides what is supported, never this one.
OPA_BUILTINS = frozenset(
    {
        "abs", "all", "and", "any", "array.concat", "array.flatten", "array.reverse",
        "array.slice", "assign", "base64.decode", "base64.encode", "base64.is_valid",
        "base64url.decode", "base64url.encode", "base64url.encode_no_pad", "bits.and",
        "bits.lsh", "bits.negate", "bits.or", "bits.rsh", "bits.xor", "cast_array",
        "cast_boolean", "cast_null", "cast_object", "cast_set", "cast_string", "ceil",
        "concat", "contains", "count", "crypto.hmac.equal", "crypto.hmac.md5",
        "crypto.hmac.sha1", "crypto.hmac.sha256", "crypto.hmac.sha512", "crypto.md5",
        "crypto.parse_private_keys", "crypto.sha1", "crypto.sha256",
        "crypto.x509.parse_and_verify_certificates",
        "crypto.x509.parse_and_verify_certificates_with_keys",
        "crypto.x509.parse_and_verify_certificates_with_options",
        "crypto.x509.parse_certificate_request", "crypto.x509.parse_certificates",
        "crypto.x509.parse_keypair", "crypto.x509.parse_rsa_private_key", "div", "endswith",
        "eq", "equal", "floor", "format_int", "glob.match", "glob.quote_meta",
        "graph.reachable", "graph.reachable_paths", "graphql.is_valid", "graphql.parse",
        "graphql.parse_and_verify", "graphql.parse_query", "graphql.parse_schema",
        "graphql.schema_is_valid", "gt", "gte", "hex.decode", "hex.encode", "http.send",
        "indexof", "indexof_n", "internal.member_2", "internal.member_3", "internal.print",
        "internal.template_string", "internal.test_case", "intersection", "io.jwt.decode",
        "io.jwt.decode_verify", "io.jwt.encode_sign", "io.jwt.encode_sign_raw",
        "io.jwt.verify_eddsa", "io.jwt.verify_es256", "io.jwt.verify_es384",
        "io.jwt.verify_es512", "io.jwt.verify_hs256", "io.jwt.verify_hs384",
        "io.jwt.verify_hs512", "io.jwt.verify_ps256", "io.jwt.verify_ps384",
        "io.jwt.verify_ps512", "io.jwt.verify_rs256", "io.jwt.verify_rs384",
        "io.jwt.verify_rs512", "is_array", "is_boolean", "is_null", "is_number", "is_object",
        "is_set", "is_string", "json.filter", "json.is_valid", "json.marshal",
        "json.marshal_with_options", "json.match_schema", "json.patch", "json.remove",
        "json.unmarshal", "json.verify_schema", "lower", "lt", "lte", "max", "min", "minus",
        "mul", "neq", "net.cidr_contains", "net.cidr_contains_matches", "net.cidr_expand",
        "net.cidr_intersects", "net.cidr_is_valid", "net.cidr_merge", "net.cidr_overlap",
        "net.lookup_ip_addr", "numbers.range", "numbers.range_step", "object.filter",
        "object.get", "object.keys", "object.remove", "object.subset", "object.union",
        "object.union_n", "opa.runtime", "or", "plus", "print", "product",
        "providers.aws.sign_req", "rand.intn", "re_match", "regex.find_all_string_submatch_n",
        "regex.find_n", "regex.globs_match", "regex.is_valid", "regex.match", "regex.replace",
        "regex.split", "regex.template_match", "rego.metadata.chain", "rego.metadata.rule",
        "rego.parse_module", "rem", "replace", "round", "semver.compare", "semver.is_valid",
        "set_diff", "sort", "split", "sprintf", "startswith", "strings.any_prefix_match",
        "strings.any_suffix_match", "strings.count", "strings.render_template",
        "strings.replace_n", "strings.reverse", "strings.split_n", "substring", "sum",
        "time.add_date", "time.clock", "time.date", "time.diff", "time.format", "time.now_ns",
        "time.parse_duration_ns", "time.parse_ns", "time.parse_rfc3339_ns", "time.weekday",
        "to_number", "trace", "trim", "trim_left", "trim_prefix", "trim_right", "trim_space",
        "trim_suffix", "type_name", "union", "units.parse", "units.parse_bytes", "upper",
        "uri.is_valid", "uri.parse", "urlquery.decode", "urlquery.decode_object",
        "urlquery.encode", "urlquery.encode_object", "uuid.parse", "uuid.rfc4122", "walk",
        "yaml.is_valid", "yaml.marshal", "yaml.unmarshal",
    }
)  # fmt: skip

# Calls the engine handles although ``is_builtin`` does not list them.
_HANDLED = frozenset({"print"})

REMOTE_HINT = "use `engine: remote` (OPA) for policies that need it"

IsBuiltin = Callable[[str], bool]


def engine_version() -> str:
    try:
        return "regopy " + metadata.version("regopy")
    except metadata.PackageNotFoundError:  # pragma: no cover - regopy is a dependency
        return "regopy"


def unsupported_builtins(is_builtin: IsBuiltin) -> list[str]:
    """The OPA builtins the embedded engine does not implement (documented in policy.md)."""
    return sorted(n for n in OPA_BUILTINS - _HANDLED if not is_builtin(n))


def _read(modules: Iterable[RegoModule]) -> tuple[list[tuple[RegoModule, Module]], list[str]]:
    read: list[tuple[RegoModule, Module]] = []
    problems: list[str] = []
    for source in modules:
        try:
            read.append((source, read_module(str(source.path), source.text)))
        except Unresolvable as exc:
            line, _, why = str(exc).partition(": ")
            where = f"{source.path}:{line.removeprefix('line ')}"
            if why == "template string":
                # rego-cpp evaluates them, but what they call cannot be checked here.
                problems.append(
                    f"{where}: {why}: its calls cannot be checked against the embedded "
                    f"engine's builtins; {REMOTE_HINT}"
                )
            else:
                problems.append(f"{where}: {why}")  # a syntax error rego-cpp would name too
    return read, problems


def unsupported_calls(
    modules: Iterable[RegoModule], is_builtin: IsBuiltin | None = None
) -> list[str]:
    """``file:line:col: why`` for every call the embedded engine cannot evaluate; empty: none.

    ``modules`` is the whole set loaded together (policies, plus tests for ``policy test``):
    a function is found when any of them defines it.
    """
    if is_builtin is None:
        is_builtin = regopy.Interpreter().is_builtin
    read, problems = _read(modules)
    functions = defined_functions(module for _, module in read)
    version = engine_version()
    for source, module in read:
        for ref in references(module):
            if not ref.called:
                continue
            where = source.location(module.tokens[ref.index].offset)
            name = ".".join(ref.names)
            if ref.computed or not ref.names:
                problems.append(
                    f"{where}: a function called through a computed name cannot be checked"
                )
                continue
            kind = resolve_call(module, ref.names, functions)
            if kind == "function" or (
                kind == "other" and (name in _HANDLED or is_builtin(name))
            ):
                continue
            if kind == "other" and name in OPA_BUILTINS:
                problems.append(
                    f"{where}: builtin {name} is not implemented by the embedded engine "
                    f"({version}); it would evaluate to undefined; {REMOTE_HINT}"
                )
            else:
                problems.append(
                    f"{where}: {name} is neither a builtin of the embedded engine nor a "
                    "function the policies define"
                )
    return problems


def drop_print(text: str) -> str:
    """``text`` with every ``print(...)`` call replaced by ``true`` (lines and columns kept)."""
    try:
        tokens = tokenize(text)
    except Unresolvable:
        return text  # refused by unsupported_calls all the same
    heads = {index for index, _, _ in function_heads(tokens)}
    spans = []
    for index, token in enumerate(tokens):
        if (
            token.kind == "ident"
            and token.text == "print"
            and index not in heads
            and not (index > 0 and tokens[index - 1].text == ".")  # data.x.print(...)
            and index + 1 < len(tokens)
            and tokens[index + 1].kind == "punct"
            and tokens[index + 1].text == "("
            and not tokens[index + 1].spaced
        ):
            close = closing_bracket(tokens, index + 1)
            if close < len(tokens):
                spans.append((token.offset, tokens[close].offset + 1))
    if not spans:
        return text
    parts = []
    last = 0
    for start, end in spans:
        if start < last:
            continue  # print(print(x)): the outer call covers it
        blank = "".join(c if c == "\n" else " " for c in text[start:end])
        parts.append(text[last:start])
        parts.append("true" + blank[4:])
        last = end
    parts.append(text[last:])
    return "".join(parts)
