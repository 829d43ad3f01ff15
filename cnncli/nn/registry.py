"""Registries: the names a config uses for layers, activations, losses, optimizers,
schedules and initializers, and the base every such component shares.

A component is a class derived from one of the engine's base classes (``Layer``,
``Activation``, ``Loss``, ``Optimizer``, ``Schedule``, ``Initializer``), made known by
name with :func:`register`:

>>> from cnncli.nn import Activation, register
>>> @register("cube")
... class Cube(Activation):
...     def forward(self, z):
...         return z ** 3
...     def derivative(self, z):
...         return 3 * z ** 2

The built-ins are registered the same way. A name is taken once: a plugin that names a
built-in, or a name another plugin took, is refused (:class:`RegistrationError`). The
same source registering again (a plugin loaded twice, or its copy in a run folder) replaces
its own entry.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from cnncli.nn.errors import ConfigError, RegistrationError
from cnncli.nn.validate import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Where a registered component was defined: None for cnncli's own built-ins."""

    path: str
    sha256: str | None
    #: The module that registered it (``__main__`` for a script or notebook).
    module: str = ""

    def same_source(self, other: "Origin") -> bool:
        return self.path == other.path or (self.sha256 is not None and self.sha256 == other.sha256)

    def __str__(self) -> str:
        return self.path


def origin_of(obj: object) -> Origin | None:
    """The plugin source an object comes from, or None for a built-in of cnncli."""
    module_name = getattr(obj, "__module__", "") or ""
    if module_name == "cnncli" or module_name.startswith("cnncli."):
        return None
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None:
        return Origin(f"<module {module_name}>", None, module_name)
    sha = getattr(module, "__cnncli_sha256__", None)
    if sha is None:
        try:
            sha = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        except OSError:
            sha = None
    return Origin(str(file), sha, module_name)


def describe_origin(origin: Origin | None) -> str:
    return "cnncli (a built-in)" if origin is None else f"the plugin {origin}"


class Registry(Generic[T]):
    """A mapping of lowercase snake_case names to components of one kind.

    >>> SHAPES = Registry("shape")
    >>> _ = SHAPES.add("square", lambda side: side * side)
    >>> SHAPES.get("square")(3)
    9
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[T, Origin | None]] = {}
        self._listeners: list[Callable[[str, T, Origin | None], None]] = []
        #: Keys every entry of this kind takes, handled here rather than by each
        #: constructor: ``{key: check(path, value) -> value}``; :func:`construct` sets
        #: the checked value as an attribute of the object it builds (``trainable`` on
        #: every layer, built-in or plugin).
        self.common_keys: dict[str, Callable[[str, object], object]] = {}

    def add(self, name: str, obj: T, origin: Origin | None = None) -> T:
        """Register ``obj`` as ``name``; a name taken by another source is refused."""
        if not isinstance(name, str) or name != name.lower() or not name.replace("_", "").isalnum() \
                or not name[:1].isalpha():
            raise RegistrationError(f"{self.kind} name {name!r} is not lowercase snake_case (such as 'my_{self.kind}')")
        if name in self._entries:
            _, taken_by = self._entries[name]
            if origin is None or taken_by is None or not origin.same_source(taken_by):
                raise RegistrationError(f"{self.kind} {name!r} is already registered by {describe_origin(taken_by)}; "
                                        "choose another name")
        for listener in self._listeners:  # a listener may refuse the name (it raises) before it is taken
            listener(name, obj, origin)
        self._entries[name] = (obj, origin)
        return obj

    def on_add(self, listener: Callable[[str, T, Origin | None], None]) -> None:
        """Call ``listener(name, obj, origin)`` for every entry, now and as they are added."""
        for name, (obj, origin) in list(self._entries.items()):
            listener(name, obj, origin)
        self._listeners.append(listener)

    def get(self, name: object, path: str = "") -> T:
        """The entry called ``name``; an unknown name lists the known ones and the closest."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name][0]
        raise ConfigError(path, "", name, raw=f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                                              f"expected one of: {', '.join(self.names())}")

    def origin(self, name: str) -> Origin | None:
        return self._entries[name][1]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name][0]) for name in self.names()]


def article(word: str) -> str:
    """'a layer', 'an optimizer'."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


# --------------------------------------------------------------------------- components
class Component:
    """What every registrable class shares: its name, its registry, its keywords.

    Subclasses of the engine's base classes are registered with :func:`register`. The
    keyword arguments an instance was made with (defaults filled in) are kept, so that
    :meth:`init_arguments` can rebuild it and ``config()`` needs no code in a plugin.
    """

    #: The registry of this kind of component (set by each base class).
    registry: Registry
    #: The attribute that holds the registered name (``name``; layers use ``type_name``).
    name_attribute = "name"
    #: Methods a subclass must define: each entry is a tuple of alternatives.
    required_methods: tuple[tuple[str, ...], ...] = ()

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._init_kwargs = _bound_arguments(cls, args, kwargs)
        return obj

    def init_arguments(self) -> dict[str, Any]:
        """The keyword arguments this object was made with, defaults included."""
        return dict(getattr(self, "_init_kwargs", {}))

    @classmethod
    def missing_methods(cls) -> list[str]:
        """The required methods this class does not define (each written 'a' or 'a or b')."""
        missing = []
        for alternatives in cls.required_methods:
            if not any(_defines(cls, method) for method in alternatives):
                missing.append(" or ".join(alternatives))
        return missing


def _defines(cls: type, method: str) -> bool:
    """Whether ``cls`` (or a class between it and the base that requires ``method``)
    overrides it: a base class's placeholder does not count."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return not getattr(vars(klass)[method], "__placeholder__", False)
    return False


def placeholder(fn):
    """Mark a base-class method that subclasses must override."""
    fn.__placeholder__ = True
    return fn


def _bound_arguments(cls: type, args: tuple, kwargs: dict) -> dict[str, Any]:
    """``cls(*args, **kwargs)``'s keyword arguments with the defaults of its own
    ``__init__`` filled in (forwarded ``**kwargs`` kept as given)."""
    try:
        sig = inspect.signature(cls.__init__)
        bound = sig.bind(None, *args, **kwargs)
    except (TypeError, ValueError):  # let __init__ itself report the wrong call
        return dict(kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    params = list(sig.parameters.values())[1:]
    for p in params:
        if p.name not in bound.arguments:
            continue
        if p.kind is p.VAR_KEYWORD:
            out.update(bound.arguments[p.name])
        elif p.kind is not p.VAR_POSITIONAL:
            out[p.name] = bound.arguments[p.name]
    return out


def register(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: make a component known by ``name`` (and ``aliases``).

    The class must derive from one of the engine's base classes and define the methods
    that base requires; otherwise :class:`RegistrationError` says what is missing.
    """

    def add(cls: type) -> type:
        registry = getattr(cls, "registry", None)
        if not isinstance(cls, type) or not isinstance(registry, Registry):
            raise RegistrationError(f"register({name!r}): {getattr(cls, '__name__', cls)!r} is not a subclass of "
                                    "Layer, Activation, Loss, Optimizer, Schedule or Initializer")
        missing = cls.missing_methods()
        if missing:
            raise RegistrationError(f"{registry.kind} class {cls.__name__} ({name!r}) does not define "
                                    f"{'; '.join(missing)}")
        origin = origin_of(cls)
        for alias in (name, *aliases):  # all names are checked before one is taken
            if alias in registry and (origin is None or registry.origin(alias) is None
                                      or not origin.same_source(registry.origin(alias))):
                registry.add(alias, cls, origin)  # raises, naming the owner
        setattr(cls, cls.name_attribute, name)
        for alias in (name, *aliases):
            registry.add(alias, cls, origin)
        return cls

    return add


# ------------------------------------------------------------------------- construction
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
        if fn is object.__init__:
            break
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


def construct(registry: Registry, spec: object, path: str, *, key: str = "name"):
    """Build an entry from ``"name"`` or ``{key: "name", **kwargs}``, checking the keywords.

    Unknown keywords are reported with the allowed ones and the closest; a missing
    required keyword is named; a ConfigError raised by the constructor gets ``path``.
    """
    if isinstance(spec, dict):
        kwargs = dict(spec)
        if key not in kwargs:
            raise ConfigError(f"{path}.{key}" if path else key, "", None,
                              raw=f"missing; expected one of: {', '.join(registry.names())}")
        name = kwargs.pop(key)
    elif isinstance(spec, str):
        name, kwargs = spec, {}
    else:
        raise ConfigError(path, f"{article(registry.kind)} name or a mapping with '{key}'", spec)
    cls = registry.get(name, f"{path}.{key}" if isinstance(spec, dict) else path)
    common = {k: check(f"{path}.{k}" if path else k, kwargs.pop(k))
              for k, check in registry.common_keys.items() if k in kwargs}
    names, required = allowed_keys(cls)
    for k in kwargs:
        if k not in names:
            allowed = ", ".join(sorted(names | {key} | set(registry.common_keys))) or "none"
            raise ConfigError(f"{path}.{k}" if path else str(k), "", None,
                              raw=f"unknown key for {registry.kind} {name!r}{did_you_mean(str(k), names)}; "
                                  f"allowed keys: {allowed}")
    for k in sorted(required):
        if k not in kwargs:
            raise ConfigError(f"{path}.{k}" if path else k, "", None,
                              raw=f"missing; {registry.kind} {name!r} requires it")
    try:
        obj = cls(**kwargs)
    except ConfigError as err:
        raise err.prefixed(path) from None
    for k, value in common.items():
        setattr(obj, k, value)
    return obj
