"""The folders a server was started with: every path a request names must lie inside one of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class RequestError(ValueError):
    """A bad request: the message is shown to the user as it is, with the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Folders:
    """The folders named at startup (the profiles' folders, the demo's output folder).

    :meth:`file` turns a path a request gives (relative to one of them, or
    absolute) into a file inside one of them, after resolving symbolic links
    and ``..``: nothing outside is ever read.
    """

    def __init__(self, folders: Sequence[str | os.PathLike]) -> None:
        self.roots: list[Path] = []
        for folder in folders:
            root = Path(folder).resolve()
            if not root.is_dir():
                raise ValueError(f"{folder} is not a folder")
            if root not in self.roots:
                self.roots.append(root)

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (resolved) lies inside one of the folders."""
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def file(self, name: str, suffixes: Sequence[str] = ()) -> Path:
        """The file ``name`` names, inside the folders; RequestError (403 outside, 404 missing) otherwise."""
        if not name or "\x00" in name:
            raise RequestError("file: give a file name")
        given = Path(name).expanduser()
        candidates = [given.resolve()] if given.is_absolute() else [(root / given).resolve() for root in self.roots]
        inside = [c for c in candidates if self.inside(c)]
        if not inside:
            raise RequestError(f"file {name!r} is outside the folders this server was started with", 403)
        for path in inside:
            if path.is_file():
                if suffixes and path.suffix.lower() not in suffixes:
                    raise RequestError(f"file {name!r} must end in {' or '.join(suffixes)}")
                return path
        raise RequestError(f"no file {name!r} in the folders this server was started with", 404)

    def files(self, suffixes: Sequence[str], limit: int = 200) -> list[str]:
        """Files with these suffixes in the folders (not inside profiles, hidden folders or caches), as
        names :meth:`file` takes: relative to their folder."""
        found: list[str] = []
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and d != "cache" and not d.endswith(".parquet")
                )
                for f in sorted(filenames):
                    if Path(f).suffix.lower() in suffixes:
                        found.append((Path(dirpath) / f).relative_to(root).as_posix())
                        if len(found) >= limit:
                            return found
        return found
