"""Rules that cannot coexist, named with the file and line of both definitions.

rego-cpp reports a failed build without saying why or where ("policies do not compile"), and
two definitions of one function with different arities crash it (SIGSEGV) instead. So the
rule heads of all modules are read with the determinism analysis's tokens and compared per
data path, the way OPA's compiler does:

- *fatal* conflicts are refused before rego-cpp sees the modules: two ``default`` rules for
  one path, and one function defined with different numbers of arguments;
- *kind* conflicts (a complete rule and a partial set, a rule and a function, ...) explain a
  build that rego-cpp refused; they are not trusted on their own, so a reading this analysis
  gets wrong can never refuse a policy rego-cpp accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sidegate.extauthz.policy.determinism import Module, read_module
from sidegate.extauthz.policy.input_paths import Token, Unresolvable, closing_bracket
from sidegate.extauthz.policy.sources import RegoModule

_NOT_RULES = frozenset(
    {"package", "import", "else", "not", "some", "every", "with", "if", "contains", "as", "in"}
)
_EXPRESSION_WORDS = frozenset({"if", "not", "else", "in", "with", "as", "contains", "some"})
_EXPRESSION_PUNCT = frozenset("=:,+-*/&|<>!([{;")

# Which kinds of definition may share a path. "bracket" (`p[x] ...`) is a partial set in
# pre-1.0 syntax and a partial object in 1.0 syntax: compatible with both.
_COMPATIBLE = {
    frozenset({"complete"}),
    frozenset({"function"}),
    frozenset({"set"}),
    frozenset({"object"}),
    frozenset({"bracket"}),
    frozenset({"set", "bracket"}),
    frozenset({"object", "bracket"}),
}
_KIND_NAMES = {
    "complete": "a complete rule",
    "function": "a function",
    "set": "a partial set rule",
    "object": "a partial object rule",
    "bracket": "a partial rule",
}


@dataclass(frozen=True, slots=True)
class Head:
    path: tuple[str, ...]
    kind: str  # complete, function, set, object, bracket
    default: bool
    arity: int  # functions only
    where: str  # file:line:col


@dataclass(frozen=True, slots=True)
class Conflicts:
    fatal: list[str]  # refuse before compiling
    kinds: list[str]  # explain a build rego-cpp refused


def _is(tokens: list[Token], index: int, kind: str, text: str) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == kind and tokens[index].text == text


def _starts_statement(tokens: list[Token], index: int) -> bool:
    if index > 0 and tokens[index - 1].line == tokens[index].line:
        return False
    if index == 0:
        return True
    before = tokens[index - 1]
    if before.kind == "ident":
        return before.text not in _EXPRESSION_WORDS
    return not (before.kind == "punct" and before.text in _EXPRESSION_PUNCT)


def _arity(tokens: list[Token], opening: int, closing: int) -> int:
    if closing == opening + 1:
        return 0
    depth = 0
    commas = 0
    for token in tokens[opening + 1 : closing]:
        if token.kind != "punct":
            continue
        if token.text in "([{":
            depth += 1
        elif token.text in ")]}":
            depth -= 1
        elif token.text == "," and depth == 0:
            commas += 1
    return commas + 1


def _heads(source: RegoModule, module: Module) -> Iterable[Head]:
    tokens = module.tokens
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind == "punct" and token.text in "([{":
            depth += 1
            continue
        if token.kind == "punct" and token.text in ")]}":
            depth -= 1
            continue
        if depth != 0 or token.kind != "ident" or not _starts_statement(tokens, index):
            continue
        default = token.text == "default"
        start = index + 1 if default else index
        if start >= len(tokens) or tokens[start].kind != "ident":
            continue
        if tokens[start].text in _NOT_RULES:
            continue
        names = [tokens[start].text]
        after = start + 1
        while (
            _is(tokens, after, "punct", ".")
            and after + 1 < len(tokens)
            and tokens[after + 1].kind == "ident"
            and not tokens[after].spaced
            and not tokens[after + 1].spaced
        ):
            names.append(tokens[after + 1].text)
            after += 2
        arity = 0
        if _is(tokens, after, "punct", "(") and not tokens[after].spaced:
            kind = "function"
            arity = _arity(tokens, after, closing_bracket(tokens, after))
        elif _is(tokens, after, "ident", "contains"):
            kind = "set"
        elif _is(tokens, after, "punct", "[") and not tokens[after].spaced:
            kind = "bracket"
            close = closing_bracket(tokens, after)
            if _is(tokens, close + 1, "punct", ":") or _is(tokens, close + 1, "punct", "="):
                kind = "object"
        else:
            kind = "complete"
        yield Head(
            module.package + tuple(names),
            kind,
            default,
            arity,
            source.location(tokens[start if not default else index].offset),
        )


def find_conflicts(modules: Iterable[RegoModule]) -> Conflicts:
    """The conflicts between rule definitions of ``modules`` (read together)."""
    by_path: dict[tuple[str, ...], list[Head]] = {}
    for source in modules:
        try:
            module = read_module(str(source.path), source.text)
        except Unresolvable:
            continue  # reported by the builtin check
        for head in _heads(source, module):
            by_path.setdefault(head.path, []).append(head)
    fatal: list[str] = []
    kinds: list[str] = []
    for path, heads in by_path.items():
        name = "data." + ".".join(path)
        defaults = [h for h in heads if h.default]
        if len(defaults) > 1:
            fatal.append(
                f"{defaults[1].where}: multiple default rules for {name} "
                f"(the other at {defaults[0].where})"
            )
        functions = [h for h in heads if h.kind == "function"]
        if len({h.arity for h in functions}) > 1:
            other = next(h for h in functions if h.arity != functions[0].arity)
            fatal.append(
                f"{other.where}: function {name} takes {other.arity} argument(s) here and "
                f"{functions[0].arity} at {functions[0].where}"
            )
        clash = next(
            (
                (a, b)
                for i, a in enumerate(heads)
                for b in heads[i + 1 :]
                if frozenset({a.kind, b.kind}) not in _COMPATIBLE
            ),
            None,
        )
        if clash is not None:
            first, other = clash
            kinds.append(
                f"{other.where}: {name} is defined as {_KIND_NAMES[other.kind]} here and as "
                f"{_KIND_NAMES[first.kind]} at {first.where}"
            )
    return Conflicts(fatal, kinds)
