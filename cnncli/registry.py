"""Name -> class registries, so that configs can name layers, losses and optimizers."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, Generic, TypeVar

from cnncli.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of lowercase snake_case names to objects of one kind.

    >>> ACTS = Registry("activation")
    >>> @ACTS.register("identity")
    ... def identity(x): return x
    >>> ACTS.get("identity") is identity
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if name != name.lower() or not name.replace("_", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r} is not lowercase snake_case")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: object, path: str = "") -> T:
        """The entry called ``name``; an unknown name lists the known ones and the closest."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        known = ", ".join(self.names())
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), self.names(), n=1, cutoff=0.5)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        raise ConfigError(path, f"{article(self.kind)} name", name, raw=_unknown(self.kind, name, known, hint))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self):
        return sorted(self._entries.items())


def article(word: str) -> str:
    """'a layer', 'an optimizer'."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _unknown(kind: str, name: object, known: str, hint: str) -> str:
    return f"unknown {kind} {name!r}{hint}; expected one of: {known}"


def allowed_keys(obj) -> tuple[set[str], set[str]]:
    """(all keyword names, required keyword names) that ``obj(**kwargs)`` accepts.

    Follows ``**kwargs`` up the class hierarchy, so a subclass that forwards its extra
    keywords to its base accepts the base's keywords too. A factory may declare
    ``allowed_keys`` and ``required_keys`` attributes instead.
    """
    if hasattr(obj, "allowed_keys"):
        return set(obj.allowed_keys), set(getattr(obj, "required_keys", ()))
    names: set[str] = set()
    required: set[str] = set()
    targets = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if isinstance(obj, type) else [obj]
    for fn in targets:
        sig = inspect.signature(fn)
        forwards = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
                if p.default is p.empty:
                    required.add(p.name)
        if not forwards:
            break
    return names, required


def construct(registry: "Registry", spec: object, path: str, *, key: str = "name"):
    """Build an entry from ``"name"`` or ``{key: "name", **kwargs}``, checking the keywords.

    Unknown keywords are reported with the allowed ones and the closest; a missing
    required keyword is named; a ConfigError raised by the constructor gets ``path``.
    """
    if isinstance(spec, dict):
        kwargs = dict(spec)
        if key not in kwargs:
            raise ConfigError(f"{path}.{key}" if path else key, f"{article(registry.kind)} name", None,
                              raw=f"missing; expected one of: {', '.join(registry.names())}")
        name = kwargs.pop(key)
    elif isinstance(spec, str):
        name, kwargs = spec, {}
    else:
        raise ConfigError(path, f"{article(registry.kind)} name or a mapping with '{key}'", spec)
    cls = registry.get(name, f"{path}.{key}" if isinstance(spec, dict) else path)
    names, required = allowed_keys(cls)
    for k in kwargs:
        if k not in names:
            close = difflib.get_close_matches(str(k), sorted(names), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(sorted(names | {key})) or "none"
            raise ConfigError(f"{path}.{k}" if path else str(k), "", None,
                              raw=f"unknown key for {registry.kind} {name!r}{hint}; allowed keys: {allowed}")
    for k in sorted(required):
        if k not in kwargs:
            raise ConfigError(f"{path}.{k}" if path else k, "", None,
                              raw=f"missing; {registry.kind} {name!r} requires it")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.prefixed(path) from None
