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
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import ParamSpec, Self

from ._entry import Policy
from ._errors import ConfigError, TemplateError
from ._loader import ErrorHook, Loader
from ._status import Result, Status
from ._template import RESERVED_PREFIX, compile_template

__all__ = ["AsyncCached", "Revalidate", "SyncCached", "make_decorator"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class AsyncCached(Protocol[P, R_co]):
    """An async function decorated by ``with_revalidate``."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> Callable[..., Coroutine[Any, Any, R_co]]: ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Result[R_co]]:
        """Like calling it, but the answer comes with its status and age."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key a call with these arguments reads and writes (to invalidate it)."""
        ...

    def cache_tags(self, *args: P.args, **kwargs: P.kwargs) -> tuple[str, ...]:
        """The decorator's tags for a call with these arguments."""
        ...


class SyncCached(Protocol[P, R_co]):
    """A sync function decorated by ``with_revalidate``."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Callable[..., R_co]:
        """Bound to an instance (a decorated method); the key template sees ``self``."""
        ...

    def lookup(self, *args: P.args, **kwargs: P.kwargs) -> Result[R_co]:
        """Like calling it, but the answer comes with its status and age."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key a call with these arguments reads and writes (to invalidate it)."""
        ...

    def cache_tags(self, *args: P.args, **kwargs: P.kwargs) -> tuple[str, ...]:
        """The decorator's tags for a call with these arguments."""
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
#: answered by ``{serve}``. (The page middleware's quick paths, ASGI and WSGI, apply the same
#: rule inline; ``tests/test_hot_path_rule.py`` holds the three together.)
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
#: local entry without awaiting; None: await the slow path.
_FAST_ASYNC = """
async def {name}({params}):
{hit}
    _isr_a = _isr_quick(_isr_ld, _isr_k, _isr_e, {args}, {kwargs})
    if _isr_a is not None:
        return _isr_a[0]
    return await _isr_miss(_isr_ld, _isr_k, {args}, {kwargs})

async def lookup({params}):
{lookup_hit}
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


_HELPERS = """
def cache_key({params}):
    return {key}

def cache_tags({params}):
    return ({tags})
"""


def _signature_source(
    fn: Callable[..., Any], sig: inspect.Signature, consts: dict[str, Any]
) -> tuple[str, str, str, str]:
    """Parameter list, positional-args tuple, kwargs dict and a call's argument list."""
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
    args_src = "(" + "".join(a + ", " for a in args) + ")"
    kwargs_src = "{" + ", ".join(kwargs) + "}"
    return ", ".join(params), args_src, kwargs_src, ", ".join(call)


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


def _check_window(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"with_revalidate({name}=...) takes seconds >= 0, not {value!r}")


def make_decorator(
    key: str | Callable[..., str],
    ttl: float,
    *,
    swr: float | None,
    stale_if_error: float,
    tags: Iterable[str | Callable[..., str]] | str,
    bind: Callable[[Loader[Any]], None],
    soft_timeout: float | None,
    timeout: float | None,
    xfetch: float | None,
    on_error: ErrorHook | None,
) -> Revalidate:
    """Validate the options now; return the decorator that validates the function and
    hands its `Loader` to ``bind`` (a runtime's ``attach``, or the default runtime's)."""
    _check_window("ttl", ttl)
    _check_window("swr", swr, allow_none=True)
    _check_window("stale_if_error", stale_if_error)
    _check_window("soft_timeout", soft_timeout, allow_none=True)
    _check_window("timeout", timeout, allow_none=True)
    if xfetch is not None and (
        isinstance(xfetch, bool) or not isinstance(xfetch, (int, float)) or xfetch <= 0
    ):
        raise ConfigError(
            f"with_revalidate(xfetch=...) takes a beta > 0 (1.0 is usual), not {xfetch!r}"
        )
    tag_list: list[str | Callable[..., str]] = [tags] if isinstance(tags, str) else list(tags)
    policy = Policy(ttl, swr, stale_if_error)

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
        consts: dict[str, Any] = {
            f"{RESERVED_PREFIX}Result": Result,
            f"{RESERVED_PREFIX}new": object.__new__,
            f"{RESERVED_PREFIX}HIT": Status.HIT,
            f"{RESERVED_PREFIX}repr": repr,
            f"{RESERVED_PREFIX}str": str,
            f"{RESERVED_PREFIX}ascii": ascii,
            f"{RESERVED_PREFIX}format": format,
        }
        params_src, args_src, kwargs_src, call_src = _signature_source(fn, sig, consts)
        if callable(key):
            _check_callable_accepts(fn, key, sig, "key")
            consts[f"{RESERVED_PREFIX}keyfn"] = _checked(key, "key", name)
            key_src = f"{RESERVED_PREFIX}keyfn({call_src})"
        else:
            key_src = compile_template(
                key, sig.parameters, what="key", func_name=name, consts=consts
            )
        tag_srcs = []
        for i, tag in enumerate(tag_list):
            if callable(tag):
                _check_callable_accepts(fn, tag, sig, "tag")
                consts[f"{RESERVED_PREFIX}tagfn{i}"] = _checked(tag, "tag", name)
                tag_srcs.append(f"{RESERVED_PREFIX}tagfn{i}({call_src})")
            else:
                tag_srcs.append(
                    compile_template(tag, sig.parameters, what="tag", func_name=name, consts=consts)
                )
        fast = _FAST_ASYNC if is_async else _FAST_SYNC
        early = _EARLY.format(args=args_src, kwargs=kwargs_src) if xfetch is not None else ""
        wrapper_name = f"{RESERVED_PREFIX}wrapper"
        source = fast.format(
            name=wrapper_name,
            params=params_src,
            args=args_src,
            kwargs=kwargs_src,
            hit=_HIT_RULE.format(key=key_src, early=early, serve=_SERVE_VALUE),
            lookup_hit=_HIT_RULE.format(key=key_src, early=early, serve=_SERVE_RESULT),
        ) + _HELPERS.format(
            params=params_src, key=key_src, tags="".join(t + ", " for t in tag_srcs)
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
            soft_timeout=soft_timeout,
            timeout=timeout,
            xfetch=xfetch,
            on_error=on_error,
        )
        loader.namespace = namespace
        loader.template = key if isinstance(key, str) else None
        namespace["_isr_ld"] = loader
        bind(loader)
        wrapper = namespace[wrapper_name]
        functools.update_wrapper(wrapper, fn)
        for helper in ("lookup", "cache_key", "cache_tags"):
            fn_helper = namespace[helper]
            functools.update_wrapper(fn_helper, fn)
            fn_helper.__name__ = helper
            fn_helper.__qualname__ = f"{name}.{helper}"
            fn_helper.__doc__ = getattr(AsyncCached, helper).__doc__
            setattr(wrapper, helper, fn_helper)
        wrapper.__isr_loader__ = loader
        return wrapper

    return Revalidate(apply)
