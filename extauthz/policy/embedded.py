"""In-process Rego evaluation with regopy (rego-cpp): policies compiled once into a bundle.

Every rule of every policy module is compiled as a bundle entrypoint, so a route may select any
decision path through ``context_extensions`` without a rebuild. A path that names no rule is an
*undefined* decision, as in OPA: rego-cpp 1.5.2 answers a query for an entrypoint that names no
rule with the value of another one, so such a path is never handed to it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import regopy
import structlog

from sidegate.common.cache import Clock
from sidegate.common.file_watcher import FileWatcher
from sidegate.common.reloading import Reloader
from sidegate.extauthz.errors import AuthzConfigError
from sidegate.extauthz.policy import builtins_check, metrics, nesting, rego_native
from sidegate.extauthz.policy.decision_cache import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL_S,
    DecisionCache,
    cache_key,
)
from sidegate.extauthz.policy.determinism import Finding, nondeterminism
from sidegate.extauthz.policy.engine import UNDEFINED, EvalResult, PolicyError
from sidegate.extauthz.policy.input_paths import (
    PathTree,
    entrypoint_paths,
    prune,
    referenced_paths,
)
from sidegate.extauthz.policy.rule_conflicts import find_conflicts
from sidegate.extauthz.policy.sources import (
    POLICY_SUFFIXES,
    PolicySourceError,
    PolicySources,
    RegoModule,
    read_sources,
)

log = structlog.get_logger("sidegate.policy")

ENGINE_NAME = "embedded"

_ERROR_HEAD = re.compile(r"\(error (\d+):")
_LOCATION = re.compile(r"\|(\d+)\|(\d+)")
_MESSAGE = re.compile(r"\(errormsg (\d+):")

# Every compiled bundle gets the next number: decisions cached for one are never another's.
_generations = itertools.count(1)

# Datetimes and dataclasses raise in orjson as they do in json (the input holds JSON types).
_ORJSON_AS_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_NEGATIVE_EXPONENT = re.compile(rb"e-[0-9]")


def input_json(document: Any) -> str:
    """``json.dumps(document, separators=(",", ":"))``: the exact text the engine is given and
    the decision cache keys, byte for byte. rego-cpp keeps escapes and number spellings as
    written (``json.marshal`` of ``1e-05`` and of ``0.00001`` differ), so no other spelling of
    the same value is used. orjson writes the same bytes faster for most inputs (4.6 -> 1.2 µs
    for the RBAC input, the checks below included); where its bytes may differ, json does."""
    try:
        encoded = orjson.dumps(document, option=_ORJSON_AS_JSON)
    except orjson.JSONEncodeError:  # ints beyond 64 bits, lone surrogates, non-str keys, depth
        return json.dumps(document, separators=(",", ":"))
    if (
        encoded.isascii()  # json escapes non-ASCII (\u00e9), orjson writes UTF-8
        and b"\x7f" not in encoded  # json escapes DEL, orjson does not
        and b"null" not in encoded  # orjson writes NaN and Infinity as null
        and b"0.0000" not in encoded  # floats under 1e-4: orjson 0.00001, json 1e-05
        and not _NEGATIVE_EXPONENT.search(encoded)  # orjson 1e-9, json 1e-09
    ):
        return encoded.decode()
    return json.dumps(document, separators=(",", ":"))


_CACHE_HIT = metrics.DECISION_CACHE.labels("hit")
_CACHE_MISS = metrics.DECISION_CACHE.labels("miss")
_CACHE_BYPASS = metrics.DECISION_CACHE.labels("bypass")


# rego-cpp 1.5.2 resolves ``object.get`` in package ``app.main`` to a sibling package
# ``app.object`` and fails every query; such package names are refused at load.
BUILTIN_NAMESPACES = frozenset(
    {
        "array", "base64", "base64url", "bits", "crypto", "glob", "graph", "graphql", "hex",
        "http", "io", "json", "net", "numbers", "object", "opa", "providers", "rand", "regex",
        "rego", "semver", "strings", "time", "units", "urlquery", "uuid", "yaml",
    }
)  # fmt: skip


class PolicyCompileError(AuthzConfigError):
    """The policy directory does not compile; the message names the file and line."""


def _length_prefixed(text: str, match: re.Match[str]) -> str:
    start = match.end()
    return text[start : start + int(match.group(1))]


def format_rego_error(exc: Exception, modules: Iterable[RegoModule] = ()) -> str:
    """Turn rego-cpp's error tree into ``file:line:col: message`` lines.

    rego-cpp reports ``(error N:<file>|<offset>|<len> (errormsg N:<message>) ...)`` with
    character offsets; the line and column are computed from the module text.
    """
    text = str(exc)
    by_name = {str(m.path): m for m in modules}
    lines = []
    for head in _ERROR_HEAD.finditer(text):
        name = _length_prefixed(text, head)
        rest = text[head.end() + len(name) :]
        where = name
        loc = _LOCATION.match(rest)
        if loc and name in by_name:
            where = by_name[name].location(int(loc.group(1)))
        msg_match = _MESSAGE.search(rest)
        message = _length_prefixed(rest, msg_match) if msg_match else "error"
        lines.append(f"{where}: {message}")
    return "; ".join(lines) or text.strip()


def _nest_data(sources: PolicySources) -> dict[str, Any]:
    """Data files land at their directory's path, as OPA loads a directory (a/b/data.json ->
    data.a.b); documents at the same path are merged key by key."""
    root: dict[str, Any] = {}
    for path, doc in sources.data:
        node = root
        for part in path.parent.relative_to(sources.directory).parts:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PolicyCompileError(f"{path}: data path conflicts with another data file")
        for key, value in doc.items():
            if key in node and isinstance(node[key], dict) and isinstance(value, dict):
                node[key] = {**node[key], **value}
            else:
                node[key] = value
    return root


def _add_modules(interpreter: regopy.Interpreter, modules: Iterable[RegoModule]) -> None:
    modules = tuple(modules)
    for module in modules:
        try:
            nesting.check_rego(module.text)
        except nesting.TooDeep as exc:
            raise PolicyCompileError(f"{module.location(exc.offset)}: {exc}") from None
        try:
            # print() would write to stdout between the JSON log lines: see builtins_check.
            interpreter.add_module(str(module.path), builtins_check.drop_print(module.text))
        except regopy.RegoError as exc:
            raise PolicyCompileError(format_rego_error(exc, modules)) from exc


def new_interpreter(
    sources: PolicySources, extra_modules: Iterable[RegoModule] = ()
) -> regopy.Interpreter:
    """An interpreter holding the data documents, the policy modules and ``extra_modules``."""
    interpreter = regopy.Interpreter()
    # rego-cpp prints compile errors to stdout itself, which would break JSON log lines;
    # they are raised (and logged with file:line) instead.
    interpreter.log_level = regopy.LogLevel.NONE
    data = _nest_data(sources)
    if data:
        interpreter.add_data_json(json.dumps(data))
    _add_modules(interpreter, (*sources.policy_modules, *extra_modules))
    return interpreter


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    interpreter: regopy.Interpreter
    bundle: regopy.Bundle
    entrypoints: frozenset[str]
    sources: PolicySources
    compiled_at: float
    # Entrypoints the bundle cannot evaluate (a rego-cpp bundle compiler bug, see
    # rego_native): they are evaluated by the interpreter. Grows if found at run time.
    interpreted: set[str]
    # The input paths the policy modules can read (None: not bounded), see input_paths.
    input_paths: PathTree | None = None
    generation: int = 0
    # Why decisions of this bundle must not be cached (empty: they may be), see determinism.
    cache_blockers: tuple[Finding, ...] = ()
    # Per entrypoint, the (smaller) input paths the packages it reaches can read.
    entry_paths: dict[str, PathTree] = field(default_factory=dict)


def compile_policies(
    sources: PolicySources | Path, required_paths: Iterable[str] = ()
) -> CompiledPolicies:
    """Compile every policy module; ``required_paths`` must each name a rule.

    Raises PolicyCompileError only: nesting is bounded before anything recurses (see
    nesting), and a RecursionError that still escapes is reported as such, never let out.
    """
    try:
        return _compile(sources, required_paths)
    except RecursionError:
        directory = sources.directory if isinstance(sources, PolicySources) else sources
        raise PolicyCompileError(
            f"{directory}: policies or data nested too deeply to compile"
        ) from None


def _compile(sources: PolicySources | Path, required_paths: Iterable[str]) -> CompiledPolicies:
    if isinstance(sources, Path):
        try:
            sources = read_sources(sources)
        except PolicySourceError as exc:
            raise PolicyCompileError(str(exc)) from exc
    for module in sources.modules:
        last = module.package.rsplit(".", 1)[-1]
        if last in BUILTIN_NAMESPACES:
            raise PolicyCompileError(
                f"{module.location(module.package_offset)}: package {module.package!r} ends "
                f"with the builtin namespace {last!r}, which breaks {last}.* builtins in "
                "rego-cpp; rename it"
            )
    known = sources.rule_paths()
    required = {p.strip("/") for p in required_paths}
    missing = sorted(required - known)
    if missing:
        raise PolicyCompileError(
            f"{sources.directory}: decision path(s) {', '.join(missing)} name no rule"
        )
    modules = sources.policy_modules
    # Before rego-cpp sees them: some conflicts crash it, and it names none of them.
    conflicts = find_conflicts(modules)
    if conflicts.fatal:
        raise PolicyCompileError("; ".join(conflicts.fatal))
    interpreter = new_interpreter(sources)
    points = sorted(known)
    try:
        bundle = interpreter.build(None, points)
    except regopy.RegoError as exc:
        raise PolicyCompileError(format_rego_error(exc, sources.policy_modules)) from exc
    if not bundle.ok():
        raise PolicyCompileError(
            "; ".join(conflicts.kinds)
            or f"{sources.directory}: policies do not compile (rego-cpp names no location)"
        )
    # What the engine cannot evaluate would read as undefined, which `not` turns into allow.
    unsupported = builtins_check.unsupported_calls(modules, interpreter.is_builtin)
    if unsupported:
        raise PolicyCompileError("; ".join(unsupported))
    interpreted = _probe(interpreter, bundle, points)
    input_paths, unbounded = referenced_paths(
        [m.text for m in modules], [str(m.path) for m in modules]
    )
    blockers = nondeterminism([m.text for m in modules], [str(m.path) for m in modules])
    if input_paths is None:
        log.info("policy_input_not_pruned", directory=str(sources.directory), reason=unbounded)
        # The whole input (request ids, times) makes every key unique: caching only costs.
        blockers.insert(0, Finding(str(sources.directory), "", f"input not pruned: {unbounded}"))
    return CompiledPolicies(
        interpreter,
        bundle,
        frozenset(points),
        sources,
        time.time(),
        interpreted,
        input_paths,
        next(_generations),
        tuple(blockers),
        entrypoint_paths([(m.package, m.text) for m in modules], points)
        if input_paths is not None else {},
    )


def _probe(interpreter: regopy.Interpreter, bundle: regopy.Bundle, points: list[str]) -> set[str]:
    """Entrypoints whose compiled plan fails rego-cpp's bundle verifier (any input does)."""
    broken = set()
    rego_native.set_input_json(interpreter, "{}")
    for point in points:
        try:
            rego_native.query_entrypoint(interpreter, bundle, point)
        except rego_native.BrokenEntrypoint:
            broken.add(point)
        except PolicyError:
            pass  # an evaluation error on an empty input says nothing about the plan
    if broken:
        log.warning("policy_entrypoints_interpreted", entrypoints=sorted(broken))
    return broken


class EmbeddedEngine:
    """Evaluates decision paths against the compiled bundle; reloads atomically.

    An interpreter holds one input at a time and regopy's ctypes calls release the GIL, so the
    lock serialises set-input + query per interpreter (threads of a thread-pool server would
    otherwise swap each other's input mid-query). A reload compiles a new interpreter aside
    and swaps one reference: in-flight evaluations finish on the old one.

    Decisions are cached (``cache_decisions``, see decision_cache) only for bundles whose
    input is pruned and whose modules call nothing that could answer differently for the
    same input; otherwise every evaluation is a bypass.
    """

    def __init__(
        self,
        directory: Path,
        entrypoints: Iterable[str] = (),
        *,
        watch_interval: float = 0.0,
        cache_decisions: bool = True,
        cache_max_entries: int = DEFAULT_MAX_ENTRIES,
        cache_ttl_s: float = DEFAULT_TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.directory = directory
        self._required = tuple(p.strip("/") for p in entrypoints)
        self._cache = (
            DecisionCache(cache_max_entries, cache_ttl_s, clock=clock) if cache_decisions else None
        )
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._compiled: CompiledPolicies | None = None
        self._watch_interval = watch_interval
        self.watcher: FileWatcher | None = None
        # Compiles in a worker thread (reload() swaps under the lock); any exception is a failed
        # reload that keeps the running bundle.
        self.reloader: Reloader[bool] = Reloader("policy", str(directory), self.reload)

    name = ENGINE_NAME

    def load(self) -> None:
        """Compile now; raises PolicyCompileError and leaves the running bundle in place."""
        compiled = compile_policies(self.directory, self._required)
        with self._lock:
            self._compiled = compiled
        metrics.BUNDLE_LOADED_AT.set(compiled.compiled_at)
        if self._cache is not None:
            # Older generations can never be hit again; free them now.
            self._cache.clear()
            if compiled.cache_blockers:
                first = compiled.cache_blockers[0]
                log.info(
                    "policy_decision_cache_disabled",
                    directory=str(self.directory),
                    location=first.where,
                    builtin=first.name,
                    reason=first.why,
                    findings=len(compiled.cache_blockers),
                )

    def reload(self) -> bool:
        """Recompile (SIGHUP, file change). On failure log the error, keep the running bundle."""
        with self._reload_lock:
            try:
                self.load()
            except PolicyCompileError as exc:
                metrics.RELOADS.labels("failed").inc()
                log.error("policy_reload_failed", directory=str(self.directory), error=str(exc))
                return False
        metrics.RELOADS.labels("ok").inc()
        compiled = self._compiled
        log.info(
            "policy_reloaded",
            directory=str(self.directory),
            modules=len(compiled.sources.policy_modules) if compiled else 0,
        )
        return True

    @property
    def ready(self) -> bool:
        return self._compiled is not None

    @property
    def entrypoints(self) -> frozenset[str]:
        return self._compiled.entrypoints if self._compiled else frozenset()

    @property
    def decision_cache(self) -> DecisionCache | None:
        """The cache decisions of the loaded bundle go to; None: they are not cached."""
        compiled = self._compiled
        if compiled is None or compiled.cache_blockers:
            return None
        return self._cache

    @property
    def input_needs(self) -> PathTree | None:
        """The input paths the loaded policies can read; None: all of it (nothing loaded, or
        a use of ``input`` the analysis cannot bound). Follows every reload."""
        return self._compiled.input_paths if self._compiled else None

    async def start(self) -> None:
        if self._compiled is None:
            self.load()
            metrics.RELOADS.labels("ok").inc()
        if self._watch_interval > 0 and self.watcher is None:
            compiled = self._compiled
            self.watcher = FileWatcher(
                "policy",
                self.directory,
                self.reload_async,
                interval=self._watch_interval,
                suffixes=POLICY_SUFFIXES,
            )
            self.watcher.start(compiled.sources.fingerprint if compiled else None)

    async def reload_async(self, trigger: str = "watch") -> bool:
        """Recompile in a worker thread (watcher, SIGHUP); never raises."""
        return await self.reloader.run(trigger)

    async def close(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            await watcher.stop()

    def evaluate_json(self, path: str, input_json: str) -> EvalResult:
        """Evaluate with an input already serialised (the fast path, no dict round trip)."""
        return self._evaluate_on(self._compiled, path, input_json)

    def _evaluate_on(
        self, compiled: CompiledPolicies | None, path: str, input_json: str
    ) -> EvalResult:
        if compiled is None:
            raise PolicyError("no policy bundle loaded", outage=True)
        entrypoint = path.strip("/")
        started = time.perf_counter()
        if entrypoint not in compiled.entrypoints:
            return EvalResult(UNDEFINED, 0.0)
        cache = None if compiled.cache_blockers else self._cache
        if cache is None:
            _CACHE_BYPASS.inc()
            value = self._query(compiled, entrypoint, input_json)
            return EvalResult(value, time.perf_counter() - started)
        key = cache_key(compiled.generation, entrypoint, input_json)
        hit = cache.get(key)
        if hit is not None:
            _CACHE_HIT.inc()
            return EvalResult(hit[0], time.perf_counter() - started, cached=True)
        _CACHE_MISS.inc()
        value = self._query(compiled, entrypoint, input_json)  # errors raise: never stored
        cache.put(key, value)
        return EvalResult(value, time.perf_counter() - started)

    def _query(self, compiled: CompiledPolicies, entrypoint: str, input_json: str) -> Any:
        interpreter = compiled.interpreter
        with self._lock:
            try:
                rego_native.set_input_json(interpreter, input_json)
                if entrypoint in compiled.interpreted:
                    value = rego_native.query_rule(interpreter, entrypoint)
                else:
                    try:
                        value = rego_native.query_entrypoint(
                            interpreter, compiled.bundle, entrypoint
                        )
                    except rego_native.BrokenEntrypoint:
                        compiled.interpreted.add(entrypoint)
                        log.warning("policy_entrypoints_interpreted", entrypoints=[entrypoint])
                        value = rego_native.query_rule(interpreter, entrypoint)
            except regopy.RegoError as exc:
                raise PolicyError(f"evaluation failed: {format_rego_error(exc)}") from exc
        return value

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> EvalResult:
        compiled = self._compiled
        tree = compiled.entry_paths.get(path.strip("/")) if compiled is not None else None
        if tree is not None:
            # Only what this entrypoint can read: a smaller input, and a cache key per role
            # rather than per token when the policy reads roles, not subjects.
            input_doc = prune(input_doc, tree)
        # The bundle whose tree pruned the input decides on it, even if a reload swaps it now.
        return self._evaluate_on(compiled, path, input_json(input_doc))
