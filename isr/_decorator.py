"""``with_revalidate``: the decorator, and the wrapper it generates for each function.

The wrapper is generated Python source with the decorated function's own parameter list, so
that a fresh hit costs one f-string (the key), one C-level dict lookup, three comparisons and
two stores, and nothing else: no ``inspect.Signature.bind``, no ``*args`` packing, no layers.
Everything else (stale, miss, errors, coalescing) is the runtime's slow path. Clarity over
cleverness everywhere but here; the benchmark in ``benchmarks/hot_path.py`` keeps it honest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Concatenate, NamedTuple, Protocol, TypeVar, overload

from typing_extensions import ParamSpec, Self

from ._entry import Mode, ModeName, Policy, Seconds, optional_seconds, seconds
from ._errors import ConfigError, TemplateError
from ._loader import ErrorHook, Loader
from ._status import Result, Status
from ._template import RESERVED_PREFIX, compile_template

__all__ = [
    "AsyncBound",
    "AsyncCached",
    "Revalidate",
    "SyncBound",
    "SyncCached",
    "make_decorator",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R2 = TypeVar("R2")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")

# The helpers' docstrings, shared by the protocols below and the generated functions.
_DOCS = {
    "lookup": "Like calling it, but the answer comes with its status and age.",
    "cache_key": "The key a call with these arguments reads and writes (to invalidate it).",
    "cache_tags": "The decorator's tags for a call with these arguments.",
    "refresh": (
        "Fetch now (or join the fetch of this key in flight), store the new value and "
        "return it; the origin's error reaches the caller."
    ),
    "invalidate": (
        "Invalidate the key a call with these arguments makes (``mode``: as for "
        "`isr.ISR.invalidate`); True if an entry was there."
    ),
}


class AsyncBound(Protocol[P, R_co]):
    """A decorated async function's call and helpers; also what a decorated method is
    through an instance, ``self`` bound for the call and each helper alike."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Result[R_co]]:
        """Like calling it, but the answer comes with its status and age."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key a call with these arguments reads and writes (to invalidate it)."""
        ...

    def cache_tags(self, *args: P.args, **kwargs: P.kwargs) -> tuple[str, ...]:
        """The decorator's tags for a call with these arguments."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]:
        """Fetch now (or join the fetch in flight), store and return the new value."""
        ...

    @overload
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bool]: ...
    @overload
    def invalidate(
        self, *args: Any, mode: ModeName | Mode, **kwargs: Any
    ) -> Coroutine[Any, Any, bool]: ...


class SyncBound(Protocol[P, R_co]):
    """A decorated sync function's call and helpers; also what a decorated method is
    through an instance, ``self`` bound for the call and each helper alike."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> Result[R_co]:
        """Like calling it, but the answer comes with its status and age."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key a call with these arguments reads and writes (to invalidate it)."""
        ...

    def cache_tags(self, *args: P.args, **kwargs: P.kwargs) -> tuple[str, ...]:
        """The decorator's tags for a call with these arguments."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Fetch now (or join the fetch in flight), store and return the new value."""
        ...

    @overload
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    @overload
    def invalidate(self, *args: Any, mode: ModeName | Mode, **kwargs: Any) -> bool: ...


class AsyncCached(AsyncBound[P, R_co], Protocol[P, R_co]):
    """An async function decorated by ``with_revalidate``: the call and its helpers (see
    `AsyncBound`), and, on a method, ``self`` bound through an instance.

    ``invalidate(*args, mode=..., **kwargs)``: with ``mode`` given, type checkers do not
    check the other arguments (PEP 612 cannot add a keyword to a function's parameters);
    without it, they do.
    """

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: AsyncCached[Concatenate[S, P2], R2], instance: S, owner: type[Any] | None = None
    ) -> AsyncBound[P2, R2]:
        """A decorated method through an instance: ``self`` bound, helpers included."""
        ...


class SyncCached(SyncBound[P, R_co], Protocol[P, R_co]):
    """A sync function decorated by ``with_revalidate`` (see `AsyncCached`)."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: SyncCached[Concatenate[S, P2], R2], instance: S, owner: type[Any] | None = None
    ) -> SyncBound[P2, R2]:
        """A decorated method through an instance: ``self`` bound, helpers included."""
        ...


class Revalidate:
    """What ``with_revalidate(...)`` returns: apply it to an async or a sync function."""

    def __init__(self, apply: Callable[[Callable[..., Any]], Any]) -> None:
        self._apply = apply

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCached[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> SyncCached[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Any:
        return self._apply(fn)


#: The hot-path rule of ``isr/adapters/base.py``, the one place the generated wrappers spell
#: it: an entry peeked under the key is a fresh hit when its generation is the store's and
#: its ``fresh_until`` lies ahead of the clock; it is then marked recently used, counted, and
#: answered by ``{serve}``. (The call-site form, ``ISR._site_hit``, and the page middleware's
#: quick paths, ASGI and WSGI, apply the same rule inline; ``tests/test_hot_path_rule.py``
#: holds the four together.)
_HIT_RULE = """    global _isr_hits
    _isr_k = {key}
    _isr_e = _isr_peek(_isr_k)
    if _isr_e is not None and _isr_e.gen is _isr_ad.gen:
        _isr_now = _isr_clock()
        if _isr_now < _isr_e.fresh_until:
            _isr_e.used = True
            _isr_hits += 1{early}
{serve}"""

#: A call's hit: the value.
_SERVE_VALUE = "            return _isr_e.value"
#: ``lookup``'s hit: the `Result`, built field by field (no ``__init__`` frame).
_SERVE_RESULT = """            _isr_r = _isr_new(_isr_Result)
            _isr_r.value = _isr_e.value
            _isr_r.status = _isr_HIT
            _isr_r.age = _isr_now - _isr_e.created
            _isr_r.error = None
            return _isr_r"""

#: XFetch's early refresh on a fresh hit, in the hit block.
_EARLY = """
            if _isr_early(_isr_ld, _isr_e, _isr_now):
                _isr_spawn(_isr_ld, _isr_k, {args}, {kwargs}, _isr_e)"""

#: Past the fresh hit, the async driver's ``quick_answer`` serves a stale (or backing-off)
#: local entry without awaiting; None: await the slow path (at once when nothing was peeked:
#: a network store's every read).
_FAST_ASYNC = """
async def {name}({params}):
{hit}
    if _isr_e is not None:
        _isr_a = _isr_quick(_isr_ld, _isr_k, _isr_e, {args}, {kwargs})
        if _isr_a is not None:
            return _isr_a[0]
    return await _isr_miss(_isr_ld, _isr_k, {args}, {kwargs})

async def lookup({params}):
{lookup_hit}
    if _isr_e is not None:
        _isr_a = _isr_quick(_isr_ld, _isr_k, _isr_e, {args}, {kwargs})
        if _isr_a is not None:
            return _isr_Result(*_isr_a)
    return await _isr_lookup(_isr_ld, _isr_k, {args}, {kwargs})
"""

_FAST_SYNC = """
def {name}({params}):
{hit}
    return _isr_miss(_isr_ld, _isr_k, {args}, {kwargs})

def lookup({params}):
{lookup_hit}
    return _isr_lookup(_isr_ld, _isr_k, {args}, {kwargs})
"""


#: The helpers beside the call (``async`` ones for an async function): ``fn.cache_key``,
#: ``fn.cache_tags``, ``fn.refresh`` and ``fn.invalidate``, whose extra keyword is ``mode``.
_HELPERS = """
def cache_key({params}):
    return {key}

def cache_tags({params}):
    return ({tags})

{a}def refresh({params}):
    return {aw}_isr_refresh(_isr_ld, {key}, {args}, {kwargs})

{a}def invalidate({params_mode}):
    return {aw}_isr_invalidate({key}, {mode})
"""


class _Source(NamedTuple):
    """A decorated function's parameters as the generated code spells them."""

    params: str  # the parameter list, defaults as constants
    args: str  # the positional arguments, as a tuple
    kwargs: str  # the keyword arguments, as a dict
    call: str  # the arguments of a call passing them all on
    with_mode: str  # the parameter list plus a keyword-only ``mode`` (``fn.invalidate``)
    mode: str  # what ``fn.invalidate`` passes as the mode


def _signature_source(
    fn: Callable[..., Any], sig: inspect.Signature, consts: dict[str, Any]
) -> _Source:
    """How the generated code spells ``fn``'s parameters (see `_Source`)."""
    params: list[str] = []
    args: list[str] = []
    kwargs: list[str] = []
    call: list[str] = []
    saw_kwonly_marker = False
    last_posonly = -1
    plist = list(sig.parameters.values())
    for i, p in enumerate(plist):
        if p.kind is p.POSITIONAL_ONLY:
            last_posonly = i
    for i, p in enumerate(plist):
        name = p.name
        if name.startswith(RESERVED_PREFIX):
            raise TemplateError(
                f"{fn.__qualname__}() has a parameter {name!r}; names starting with "
                f"{RESERVED_PREFIX!r} are reserved for isr's generated wrapper"
            )
        text = name
        if p.default is not p.empty:
            const = f"{RESERVED_PREFIX}d{len(consts)}"
            consts[const] = p.default
            text += f"={const}"
        if p.kind is p.VAR_POSITIONAL:
            params.append("*" + name)
            args.append("*" + name)
            call.append("*" + name)
            saw_kwonly_marker = True
        elif p.kind is p.VAR_KEYWORD:
            params.append("**" + name)
            kwargs.append("**" + name)
            call.append("**" + name)
        elif p.kind is p.KEYWORD_ONLY:
            if not saw_kwonly_marker:
                params.append("*")
                saw_kwonly_marker = True
            params.append(text)
            kwargs.append(f"{name!r}: {name}")
            call.append(f"{name}={name}")
        else:
            params.append(text)
            args.append(name)
            call.append(name)
        if i == last_posonly:
            params.append("/")
    # fn.invalidate(..., mode=...): a keyword-only parameter, before any **kwargs. A
    # function with its own ``mode`` keeps it; its invalidate then always expires.
    with_mode, mode = list(params), "mode"
    if "mode" in sig.parameters:
        mode = repr("expire")
    else:
        at = len(with_mode) - 1 if plist and plist[-1].kind is plist[-1].VAR_KEYWORD else None
        extra = ["mode='expire'"] if saw_kwonly_marker else ["*", "mode='expire'"]
        if at is None:
            with_mode.extend(extra)
        else:
            with_mode[at:at] = extra
    return _Source(
        ", ".join(params),
        "(" + "".join(a + ", " for a in args) + ")",
        "{" + ", ".join(kwargs) + "}",
        ", ".join(call),
        ", ".join(with_mode),
        mode,
    )


def _checked(fn: Callable[..., Any], what: str, owner: str) -> Callable[..., str]:
    def call(*args: Any, **kwargs: Any) -> str:
        result = fn(*args, **kwargs)
        if not isinstance(result, str) or not result:
            raise TemplateError(
                f"the {what} callable for {owner}() returned {result!r}; it must return a "
                "non-empty str"
            )
        return result

    return call


def _check_callable_accepts(
    fn: Callable[..., Any], keyfn: Callable[..., Any], sig: inspect.Signature, what: str
) -> None:
    """A key or tag callable must accept the decorated function's arguments."""
    try:
        ksig = inspect.signature(keyfn)
    except (TypeError, ValueError):
        return
    args: list[None] = []
    kwargs: dict[str, None] = {}
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(None)
        elif p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = None
    try:
        ksig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TemplateError(
            f"the {what} callable {getattr(keyfn, '__name__', keyfn)!r} does not accept the "
            f"arguments of {fn.__qualname__}{sig}: {exc}"
        ) from None


#: The helpers set on a decorated function (and bound, on a method: `_Method`).
_HELPER_NAMES = ("lookup", "cache_key", "cache_tags", "refresh", "invalidate")
#: First parameters that make a function a method (``shared`` then matters).
_SELF = ("self", "cls")


class _Bound(functools.partial):  # type: ignore[type-arg]
    """A decorated method reached through an instance: the generated wrapper with ``self``
    bound (a `functools.partial`, so the call itself is C-level), and each helper bound
    the same way on access."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name in _HELPER_NAMES:
            return functools.partial(getattr(self.func, name), *self.args)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<bound cached method {self.func.__qualname__} of {self.args[0]!r}>"


class _Method:
    """A decorated method: the class attribute. Through an instance it is a `_Bound`, so
    that ``obj.method.lookup(...)`` (and ``cache_key``, ``cache_tags``, ``refresh``,
    ``invalidate``) bind ``self`` as the call does; through the class, it is the plain
    function (``Class.method(obj, ...)``). Plain functions get no such layer: their call
    is the generated wrapper itself."""

    __qualname__: str

    def __init__(self, wrapper: Callable[..., Any]) -> None:
        self._wrapper = wrapper
        functools.update_wrapper(self, wrapper)
        self.__wrapped__ = getattr(wrapper, "__wrapped__")  # noqa: B009 - the user's function
        for helper in (*_HELPER_NAMES, "__isr_loader__"):
            setattr(self, helper, getattr(wrapper, helper))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return _Bound(self._wrapper, instance)

    def __repr__(self) -> str:
        return f"<cached method {self.__qualname__}>"


def make_decorator(
    key: str | Callable[..., str],
    ttl: Seconds,
    *,
    swr: Seconds | None,
    stale_if_error: Seconds | None,
    tags: Iterable[str | Callable[..., str]] | str,
    bind: Callable[[Loader[Any]], None],
    soft_timeout: Seconds | None,
    timeout: Seconds | None,
    xfetch: float | None,
    on_error: ErrorHook | None,
    shared: bool = False,
) -> Revalidate:
    """Validate the options now; return the decorator that validates the function and
    hands its `Loader` to ``bind`` (a runtime's ``attach``, or the default runtime's)."""
    ttl_s = seconds(ttl, "with_revalidate(ttl=...)")
    swr_s = optional_seconds(swr, "with_revalidate(swr=...)")
    sie_s = optional_seconds(stale_if_error, "with_revalidate(stale_if_error=...)")
    soft_s = optional_seconds(soft_timeout, "with_revalidate(soft_timeout=...)")
    timeout_s = optional_seconds(timeout, "with_revalidate(timeout=...)")
    if xfetch is not None and (
        isinstance(xfetch, bool) or not isinstance(xfetch, (int, float)) or xfetch <= 0
    ):
        raise ConfigError(
            f"with_revalidate(xfetch=...) takes a beta > 0 (1.0 is usual), not {xfetch!r}"
        )
    tag_list: list[str | Callable[..., str]] = [tags] if isinstance(tags, str) else list(tags)
    policy = Policy(ttl_s, swr_s, sie_s)

    def apply(fn: Callable[..., Any]) -> Any:
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise ConfigError(f"with_revalidate cannot cache the generator {fn.__qualname__}()")
        if not callable(fn):
            raise ConfigError(f"with_revalidate decorates functions, not {type(fn).__name__}")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        sig = inspect.signature(fn)
        first = next(iter(sig.parameters.values()), None)
        method = (
            inspect.isfunction(fn)
            and first is not None
            and first.name in _SELF
            and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
        )
        consts: dict[str, Any] = {
            f"{RESERVED_PREFIX}Result": Result,
            f"{RESERVED_PREFIX}new": object.__new__,
            f"{RESERVED_PREFIX}HIT": Status.HIT,
            f"{RESERVED_PREFIX}repr": repr,
            f"{RESERVED_PREFIX}str": str,
            f"{RESERVED_PREFIX}ascii": ascii,
            f"{RESERVED_PREFIX}format": format,
        }
        src = _signature_source(fn, sig, consts)
        if callable(key):
            _check_callable_accepts(fn, key, sig, "key")
            consts[f"{RESERVED_PREFIX}keyfn"] = _checked(key, "key", name)
            key_src = f"{RESERVED_PREFIX}keyfn({src.call})"
        else:
            named: set[str] = set()
            key_src = compile_template(
                key, sig.parameters, what="key", func_name=name, consts=consts, used=named
            )
            if method and not shared and first is not None and first.name not in named:
                raise TemplateError(
                    f"key template {key!r} of the method {name}() does not name "
                    f"{{{first.name}...}}: every instance would share one entry per key, each "
                    f"served what another loaded. Put the instance in the key (e.g. "
                    f"'{{{first.name}.id}}'), or pass shared=True if one entry for all "
                    "instances is meant"
                )
        tag_srcs = []
        for i, tag in enumerate(tag_list):
            if callable(tag):
                _check_callable_accepts(fn, tag, sig, "tag")
                consts[f"{RESERVED_PREFIX}tagfn{i}"] = _checked(tag, "tag", name)
                tag_srcs.append(f"{RESERVED_PREFIX}tagfn{i}({src.call})")
            else:
                tag_srcs.append(
                    compile_template(tag, sig.parameters, what="tag", func_name=name, consts=consts)
                )
        fast = _FAST_ASYNC if is_async else _FAST_SYNC
        early = _EARLY.format(args=src.args, kwargs=src.kwargs) if xfetch is not None else ""
        wrapper_name = f"{RESERVED_PREFIX}wrapper"
        source = fast.format(
            name=wrapper_name,
            params=src.params,
            args=src.args,
            kwargs=src.kwargs,
            hit=_HIT_RULE.format(key=key_src, early=early, serve=_SERVE_VALUE),
            lookup_hit=_HIT_RULE.format(key=key_src, early=early, serve=_SERVE_RESULT),
        ) + _HELPERS.format(
            params=src.params,
            params_mode=src.with_mode,
            mode=src.mode,
            args=src.args,
            kwargs=src.kwargs,
            key=key_src,
            tags="".join(t + ", " for t in tag_srcs),
            a="async " if is_async else "",
            aw="await " if is_async else "",
        )
        namespace: dict[str, Any] = {"__builtins__": __builtins__, "_isr_hits": 0, **consts}
        code = compile(source, f"<isr wrapper of {name}>", "exec")
        exec(code, namespace)
        loader: Loader[Any] = Loader(
            fn,
            name=name,
            is_async=is_async,
            policy=policy,
            tags=namespace["cache_tags"],
            soft_timeout=soft_s,
            timeout=timeout_s,
            xfetch=xfetch,
            on_error=on_error,
        )
        loader.template = key if isinstance(key, str) else None
        loader.namespace = namespace
        namespace["_isr_ld"] = loader
        bind(loader)
        wrapper = namespace[wrapper_name]
        functools.update_wrapper(wrapper, fn)
        for helper in _HELPER_NAMES:
            fn_helper = namespace[helper]
            functools.update_wrapper(fn_helper, fn)
            fn_helper.__name__ = helper
            fn_helper.__qualname__ = f"{name}.{helper}"
            fn_helper.__doc__ = _DOCS[helper]
            setattr(wrapper, helper, fn_helper)
        wrapper.__isr_loader__ = loader
        return _Method(wrapper) if method else wrapper

    return Revalidate(apply)
