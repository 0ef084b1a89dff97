"""Can a decision be reused? Statically: which calls the policy modules make.

A Rego decision is a function of (policies, data, input) unless a policy calls a builtin that
reads the clock, randomness or the outside world, or has side effects (``trace``). Before the
embedded engine caches decisions it scans its (non-test) policy modules with the input-path
tokenizer and finds every call: a rule or function the modules define, a builtin known to be
pure, or anything else. Anything else, and any reference to a builtin known to be impure
(called or not: ``with time.now_ns as ...`` counts), rules the cache out. The analysis errs
on the side of "not cacheable": a call it cannot resolve is treated as impure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sidegate.extauthz.policy.input_paths import Token, Unresolvable, closing_bracket, tokenize

# Builtins whose result depends on more than their arguments, or that have side effects.
IMPURE_BUILTINS = frozenset(
    {
        "time.now_ns", "rand.intn", "uuid.rfc4122", "http.send", "net.lookup_ip_addr",
        "opa.runtime", "io.jwt.decode_verify", "crypto.x509.parse_and_verify_certificates",
        "crypto.x509.parse_and_verify_certificates_with_keys", "trace",
    }
)  # fmt: skip

# OPA builtins whose value depends on their arguments only. Deliberately left out although
# deterministic in intent: io.jwt.encode_sign* (ECDSA signatures are randomised) and
# providers.aws.sign_req; they count as unknown, which only costs the cache.
PURE_BUILTINS = frozenset(
    {
        # operators in function form
        "eq", "equal", "neq", "lt", "lte", "gt", "gte", "plus", "minus", "mul", "div", "rem",
        "and", "or",
        # numbers and aggregates
        "abs", "ceil", "floor", "round", "numbers.range", "numbers.range_step", "count", "sum",
        "product", "max", "min", "sort", "to_number", "format_int",
        # arrays, sets, objects
        "array.concat", "array.slice", "array.reverse", "intersection", "union",
        "object.get", "object.keys", "object.remove", "object.subset", "object.union",
        "object.union_n", "object.filter", "json.filter", "json.remove", "json.patch", "walk",
        "graph.reachable", "graph.reachable_paths",
        # strings
        "concat", "contains", "endswith", "startswith", "indexof", "indexof_n", "lower",
        "upper", "replace", "split", "sprintf", "substring", "trim", "trim_left",
        "trim_prefix", "trim_right", "trim_suffix", "trim_space", "strings.any_prefix_match",
        "strings.any_suffix_match", "strings.count", "strings.render_template",
        "strings.replace_n", "strings.reverse",
        # regular expressions and globs
        "regex.match", "re_match", "regex.is_valid", "regex.split", "regex.find_n",
        "regex.find_all_string_submatch_n", "regex.template_match", "regex.globs_match",
        "regex.replace", "glob.match", "glob.quote_meta",
        # bits and units
        "bits.and", "bits.or", "bits.xor", "bits.negate", "bits.lsh", "bits.rsh",
        "units.parse", "units.parse_bytes",
        # types
        "is_number", "is_string", "is_boolean", "is_array", "is_set", "is_object", "is_null",
        "type_name", "cast_array", "cast_set", "cast_string", "cast_boolean", "cast_null",
        "cast_object",
        # encodings
        "base64.encode", "base64.decode", "base64.is_valid", "base64url.encode",
        "base64url.encode_no_pad", "base64url.decode", "hex.encode", "hex.decode",
        "json.marshal", "json.marshal_with_options", "json.unmarshal", "json.is_valid",
        "json.verify_schema", "json.match_schema", "urlquery.encode",
        "urlquery.encode_object", "urlquery.decode", "urlquery.decode_object", "yaml.marshal",
        "yaml.unmarshal", "yaml.is_valid",
        # tokens: signature checks and decoding only (decode_verify reads the clock)
        "io.jwt.decode", "io.jwt.verify_rs256", "io.jwt.verify_rs384", "io.jwt.verify_rs512",
        "io.jwt.verify_ps256", "io.jwt.verify_ps384", "io.jwt.verify_ps512",
        "io.jwt.verify_es256", "io.jwt.verify_es384", "io.jwt.verify_es512",
        "io.jwt.verify_hs256", "io.jwt.verify_hs384", "io.jwt.verify_hs512",
        "io.jwt.verify_eddsa",
        # time arithmetic on given timestamps (the clock itself is time.now_ns)
        "time.parse_ns", "time.parse_rfc3339_ns", "time.parse_duration_ns", "time.date",
        "time.clock", "time.weekday", "time.add_date", "time.diff", "time.format",
        # crypto without verification against the current time
        "crypto.md5", "crypto.sha1", "crypto.sha256", "crypto.hmac.md5", "crypto.hmac.sha1",
        "crypto.hmac.sha256", "crypto.hmac.sha512", "crypto.hmac.equal",
        "crypto.x509.parse_certificates", "crypto.x509.parse_certificate_request",
        "crypto.x509.parse_keypair", "crypto.x509.parse_rsa_private_key",
        "crypto.parse_private_keys",
        # networks, identifiers, versions, GraphQL, Rego itself
        "net.cidr_contains", "net.cidr_intersects", "net.cidr_contains_matches",
        "net.cidr_expand", "net.cidr_merge", "net.cidr_is_valid", "net.cidr_overlap",
        "uuid.parse", "semver.is_valid", "semver.compare", "graphql.parse",
        "graphql.parse_and_verify", "graphql.parse_query", "graphql.parse_schema",
        "graphql.is_valid", "graphql.schema_is_valid", "rego.parse_module",
        "rego.metadata.chain", "rego.metadata.rule", "set_diff", "all", "any",
        # dropped at load by the embedded engine (see builtins_check): no side effect left
        "print",
    }
)  # fmt: skip

# Words followed by "(" that open a parenthesised expression, not a call.
_KEYWORDS = frozenset(
    {
        "if", "else", "not", "some", "every", "in", "with", "as", "contains", "default",
        "import", "package", "true", "false", "null",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    """Why decisions of these modules cannot be cached: where, which call, and why."""

    where: str  # file:line
    name: str  # the builtin or call as written ("" when the module cannot be read)
    why: str


@dataclass(slots=True)
class Module:
    name: str
    tokens: list[Token]
    package: tuple[str, ...]
    imports: dict[str, tuple[str, ...]]  # alias -> the reference it stands for


def _chain(tokens: list[Token], start: int) -> tuple[list[str], int]:
    """The dotted identifiers ``a.b.c`` starting at ``start`` (no whitespace inside) and the
    index after them."""
    names = [tokens[start].text]
    i = start + 1
    while (
        i + 1 < len(tokens)
        and tokens[i].kind == "punct"
        and tokens[i].text == "."
        and not tokens[i].spaced
        and tokens[i + 1].kind == "ident"
        and not tokens[i + 1].spaced
    ):
        names.append(tokens[i + 1].text)
        i += 2
    return names, i


def _is_punct(tokens: list[Token], index: int, text: str) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == "punct" and tokens[index].text == text


def _starts_body(tokens: list[Token], index: int) -> bool:
    """Does the token at ``index`` follow a function head (``f(x) :=``, ``=``, ``if``, ``{``)?"""
    if index >= len(tokens):
        return False
    token = tokens[index]
    if token.kind == "ident":
        return token.text in {"if", "else"}
    if token.text == "=":
        return not _is_punct(tokens, index + 1, "=")
    return token.kind == "punct" and token.text in {":", "{"}


def _line_start(tokens: list[Token], index: int) -> bool:
    if index == 0 or tokens[index - 1].line < tokens[index].line:
        return True
    # `default f(_) := false`
    return (
        tokens[index - 1].kind == "ident"
        and tokens[index - 1].text == "default"
        and (index == 1 or tokens[index - 2].line < tokens[index - 1].line)
    )


# What a token before a name can be when that name continues an expression (an `if` body on
# the next line, an operand), so the name cannot start a rule or function head.
_EXPRESSION_WORDS = frozenset({"if", "not", "else", "in", "with", "as", "contains", "some"})
_EXPRESSION_PUNCT = frozenset("=:,+-*/&|<>!([{;")


def _continues_expression(tokens: list[Token], index: int) -> bool:
    if index == 0:
        return False
    before = tokens[index - 1]
    if before.kind == "ident":
        return before.text in _EXPRESSION_WORDS
    return before.kind == "punct" and before.text in _EXPRESSION_PUNCT


def function_heads(tokens: list[Token]) -> Iterable[tuple[int, list[str], int]]:
    """(index, name, index of "(") of every function head: a dotted name opening a line at
    nesting depth 0, not continuing an expression, with parenthesised arguments followed by
    a body or value."""
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind == "punct" and token.text in "([{":
            depth += 1
        elif token.kind == "punct" and token.text in ")]}":
            depth -= 1
        elif (
            token.kind == "ident"
            and depth == 0
            and _line_start(tokens, index)
            and not _continues_expression(tokens, index)
        ):
            names, after = _chain(tokens, index)
            if not _is_punct(tokens, after, "("):
                continue
            if _starts_body(tokens, closing_bracket(tokens, after) + 1):
                yield index, names, after


def read_module(name: str, text: str) -> Module:
    tokens = tokenize(text)
    package: tuple[str, ...] = ()
    imports: dict[str, tuple[str, ...]] = {}
    for index, token in enumerate(tokens):
        if token.kind != "ident" or not _line_start(tokens, index):
            continue
        if token.text == "package" and not package and index + 1 < len(tokens):
            package = tuple(_chain(tokens, index + 1)[0])
        elif token.text == "import" and index + 1 < len(tokens):
            path, after = _chain(tokens, index + 1)
            alias = path[-1]
            if after + 1 < len(tokens) and tokens[after].text == "as":
                alias = tokens[after + 1].text
            imports[alias] = tuple(path)
    if not package:
        raise Unresolvable("line 1: no package declaration this analysis reads")
    return Module(name, tokens, package, imports)


def resolve_call(
    module: Module, names: Sequence[str], functions: frozenset[tuple[str, ...]]
) -> str:
    """What the call ``names(...)`` in ``module`` refers to: ``"function"`` (one the modules
    define), ``"undefined"`` (a data path naming no function of the modules), or ``"other"``
    (a builtin, or nothing at all: the name does not say)."""
    root = names[0]
    if root == "data":
        target: tuple[str, ...] | None = tuple(names[1:])
    elif root in module.imports and module.imports[root][0] == "data":
        target = module.imports[root][1:] + tuple(names[1:])
    else:
        target = None
    if target is not None:
        return "function" if target in functions else "undefined"
    if module.package + tuple(names) in functions:
        return "function"
    return "other"


def _resolve(
    module: Module, names: list[str], functions: frozenset[tuple[str, ...]]
) -> str | None:
    """None when the call ``names(...)`` is pure or a function of the modules; else why not."""
    kind = resolve_call(module, names, functions)
    if kind == "function":
        return None
    if kind == "undefined":
        return "calls a function the policies do not define"
    if ".".join(names) in PURE_BUILTINS:
        return None
    return "calls a function not known to be pure"


def _impure_reference(names: list[str]) -> str | None:
    for length in range(len(names), 0, -1):
        candidate = ".".join(names[:length])
        if candidate in IMPURE_BUILTINS:
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Reference:
    """A dotted name in a module body, and whether it is called."""

    index: int  # token index of its first name
    names: tuple[str, ...]  # () for a call through a computed name (`x[k](...)`)
    called: bool  # followed by "(" as a call: not a function head, not a keyword
    computed: bool  # called, but its root is not a plain name (`data["lib"].f(x)`)


def references(module: Module) -> Iterator[Reference]:
    """Every dotted name outside ``package``/``import`` lines, once per chain."""
    tokens = module.tokens
    heads = {index for index, _, _ in function_heads(tokens)}
    seen: set[int] = set()
    skip_line = 0
    for index, token in enumerate(tokens):
        if (
            token.kind == "ident"
            and token.text in {"package", "import"}
            and _line_start(tokens, index)
        ):
            skip_line = token.line  # names there are paths, not calls
            continue
        if token.line == skip_line or index in seen:
            continue
        if token.kind == "punct" and token.text == "(" and _is_punct(tokens, index - 1, "]"):
            if not token.spaced:
                yield Reference(index, (), True, True)
            continue
        if token.kind != "ident":
            continue
        names, after = _chain(tokens, index)
        seen.update(range(index, after))
        called = (
            _is_punct(tokens, after, "(")
            and index not in heads
            and not (len(names) == 1 and names[0] in _KEYWORDS)
        )
        yield Reference(index, tuple(names), called, called and _is_punct(tokens, index - 1, "."))


def defined_functions(modules: Iterable[Module]) -> frozenset[tuple[str, ...]]:
    """The data paths of every function the modules define."""
    return frozenset(
        module.package + tuple(head)
        for module in modules
        for _, head, _ in function_heads(module.tokens)
    )


def _module_findings(module: Module, functions: frozenset[tuple[str, ...]]) -> list[Finding]:
    findings: list[Finding] = []
    for ref in references(module):
        where = f"{module.name}:{module.tokens[ref.index].line}"
        if not ref.names:
            findings.append(Finding(where, "", "calls a function through a computed name"))
            continue
        names = list(ref.names)
        impure = _impure_reference(names)
        if impure is not None:
            findings.append(
                Finding(
                    where,
                    impure,
                    "reads the clock, randomness or the outside world, or has side effects",
                )
            )
            continue
        if not ref.called:
            continue
        if ref.computed:
            # `data["lib"].f(x)`: the reference's root is not a plain name
            findings.append(
                Finding(where, ".".join(names), "calls a function through a computed name")
            )
            continue
        why = _resolve(module, names, functions)
        if why is not None:
            findings.append(Finding(where, ".".join(names), why))
    return findings


def nondeterminism(texts: Iterable[str], names: Sequence[str] = ()) -> list[Finding]:
    """Every reason the modules' decisions may differ for the same input; empty: none.

    ``names`` (file names, in the order of ``texts``) label the findings.
    """
    modules: list[Module] = []
    findings: list[Finding] = []
    for index, text in enumerate(texts):
        name = names[index] if index < len(names) else f"module {index + 1}"
        try:
            modules.append(read_module(name, text))
        except Unresolvable as exc:
            line, _, why = str(exc).partition(": ")
            findings.append(Finding(f"{name}:{line.removeprefix('line ')}", "", why))
    functions = defined_functions(modules)
    for module in modules:
        findings.extend(_module_findings(module, functions))
    return findings
