"""Starting a server: what ``txray serve PROFILES...`` opens, and the HTTP server that runs it."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from ..profile import Profile
from .app import Server
from .folders import Folders
from .live import LiveModel
from .study import Study


def open_server(
    paths: Sequence[str | os.PathLike],
    kind: str = "token",
    models: Sequence[LiveModel] = (),
    data: Sequence[str | os.PathLike] = (),
    title: str | None = None,
) -> Server:
    """A server of the profiles ``paths``: profile files, folders of them, or a ``txray demo`` output folder
    (its profiles in the study's order, its language model and classifier). ``data``: more folders the
    ablation view may read labelled files from (the profiles' folders always)."""
    from .demo import demo_live_models, is_demo_output

    profile_paths: list[Path] = []
    folders: list[Path] = [Path(d) for d in data]
    live = list(models)
    labelled = None
    for given in map(Path, paths):
        if is_demo_output(given):
            stages, demo_models, test = demo_live_models(given)
            profile_paths += stages
            live += demo_models
            folders.append(given)
            labelled = test.resolve().relative_to(given.resolve()).as_posix() if test.is_file() else None
        elif given.is_dir() and given.suffix != ".parquet":
            found = sorted(p for p in given.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"{given} holds no profiles (*.parquet) and is no txray demo output folder")
            profile_paths += found
            folders.append(given)
        elif given.exists():
            profile_paths.append(given)
            folders.append(given.resolve().parent)
        else:
            raise FileNotFoundError(f"no profile or folder {given}")
    profiles = []
    for path in profile_paths:
        profile = Profile.load(path)
        if profile.name is None:
            profile.name = path.stem
        profiles.append(profile)
    names = [m.name for m in live]
    if len(set(names)) != len(names):
        raise ValueError(f"two models have the same name: {names}")
    return Server(
        Study(profiles, kind),
        Folders(folders),
        live,
        labelled=labelled,
        title=title or f"txray serve: {', '.join(str(p) for p in paths)}",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free port); an OSError names the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(64)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(server: Server, sock: socket.socket, quiet: bool = False) -> None:
    """Answer requests on ``sock`` until interrupted (uvicorn)."""
    import uvicorn

    from .app import create_app

    config = uvicorn.Config(create_app(server), log_level="warning" if quiet else "info", access_log=not quiet)
    uvicorn.Server(config).run(sockets=[sock])


class Background:
    """A server answering on a free port of ``host`` in a daemon thread (tests, benchmarks, screenshots):
    ``url`` while it runs, :meth:`close` to stop it."""

    def __init__(self, server: Server, host: str = "127.0.0.1") -> None:
        import threading
        import time

        import uvicorn

        from .app import create_app

        self.sock = bind(host, 0)
        self.url = url_of(self.sock)
        self.uvicorn = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.uvicorn.started and self.thread.is_alive():
            time.sleep(0.01)

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(10)
        self.sock.close()
