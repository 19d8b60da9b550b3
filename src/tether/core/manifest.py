"""What a tree holds: one Entry per relative path (POSIX separators, no leading './')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FILE = "file"
DIR = "dir"
LINK = "link"
EXEC_BITS = 0o111


@dataclass(frozen=True, slots=True, init=False)
class Entry:
    """One file, directory or symlink; `digest` is sha256 hex of a file's bytes when known.

    A frozen dataclass with a faster constructor (scans make tens of thousands per push).
    """

    kind: str
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0o644
    digest: str | None = None
    target: str | None = None

    def __init__(
        self,
        kind: str,
        size: int = 0,
        mtime_ns: int = 0,
        mode: int = 0o644,
        digest: str | None = None,
        target: str | None = None,
    ) -> None:
        # The slots' own setters: what a frozen dataclass's __init__ does, minus the lookups.
        _set_kind(self, kind)
        _set_size(self, size)
        _set_mtime_ns(self, mtime_ns)
        _set_mode(self, mode)
        _set_digest(self, digest)
        _set_target(self, target)

    def same_content(self, other: Entry | None) -> bool:
        """Whether other holds the same thing (bytes and exec bit, link target, or a dir)."""
        if other is None or other.kind != self.kind:
            return False
        if self.kind == FILE:
            if self.digest is None or other.digest is None:
                return False
            return self.digest == other.digest and (
                (self.mode & EXEC_BITS) == (other.mode & EXEC_BITS)
            )
        if self.kind == LINK:
            return self.target == other.target
        return True

    def with_digest(self, digest: str | None) -> Entry:
        """The same entry with a (newly known) digest."""
        return Entry(self.kind, self.size, self.mtime_ns, self.mode, digest, self.target)

    def same_stat(self, size: int, mtime_ns: int) -> bool:
        """Whether size and mtime match (used to reuse a cached digest)."""
        return self.size == size and self.mtime_ns == mtime_ns

    def to_json(self) -> dict[str, Any]:
        """Compact JSON form (the agent speaks the same one)."""
        data: dict[str, Any] = {"k": self.kind, "s": self.size, "m": self.mtime_ns, "p": self.mode}
        if self.digest is not None:
            data["d"] = self.digest
        if self.target is not None:
            data["t"] = self.target
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        """Inverse of to_json."""
        get = data.get
        return cls(data["k"], get("s", 0), get("m", 0), get("p", 0o644), get("d"), get("t"))


_set_kind, _set_size, _set_mtime_ns, _set_mode, _set_digest, _set_target = (
    Entry.__dict__[name].__set__
    for name in ("kind", "size", "mtime_ns", "mode", "digest", "target")
)

Manifest = dict[str, Entry]


def is_safe_relpath(path: str) -> bool:
    """A relative POSIX path that stays inside its root (no '..', no absolute, no empty part)."""
    if not path or path.startswith("/") or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def parents(path: str) -> list[str]:
    """The ancestor directories of a relative path, outermost first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]
