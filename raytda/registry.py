"""Name -> instance registries for the classes users extend (methods, ensemble kinds)."""

from __future__ import annotations

from typing import Generic, TypeVar

from raytda.specs import SpecError, _check

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """Instances of registered classes by their ``name``; ``what`` names them in errors."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls()`` available by ``cls.name``."""
        _check(bool(getattr(cls, "name", "")),
               f"{cls.__name__} needs a non-empty class attribute 'name'")
        self[cls.name] = cls()
        return cls

    def lookup(self, name: str) -> T:
        """The registered instance called ``name``, or a SpecError listing the known ones."""
        found = self.get(name)
        if found is None:
            raise SpecError(f"unknown {self.what} {name!r}; choose one of {sorted(self)}")
        return found
