"""
Durable file replacement, shared by everything that rewrites a file the
operator owns: the state file, credential files and config.yaml; and the
removal, at start-up, of the temporary files a killed write left behind.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from contextlib import suppress
from typing import Callable, Mapping

from twisted.logger import Logger

log = Logger(namespace="cliproxyd.fileio")

#: The temporary file of an atomic write of C{name}: C{.<name>.<8 characters>.tmp}
#: (the random part is C{tempfile.mkstemp}'s: lower-case letters, digits, C{_}).
_TEMP = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
_TEMP_SUFFIX = ".tmp"


def _fsync_directory(directory: str) -> None:
    """Make a rename in C{directory} durable, where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # directories cannot be opened here (Windows)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some filesystems do not support fsync on a directory.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, default_mode: int = 0o600) -> None:
    """
    Replace the file at C{path} with C{data}, atomically and durably.

    The data goes to a temporary file in the same directory (created, mode
    C{0o700}, if missing), is fsynced, gets the existing file's mode (or
    C{default_mode} for a new file) and is renamed onto C{path}; then the
    directory is fsynced. On failure the temporary file is removed and the
    error re-raised: no temporary file is ever left behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = default_mode
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def temp_target(name: str) -> str | None:
    """The file name an L{atomic_write} temporary file called C{name} was to replace; None if it is not one."""
    match = _TEMP.fullmatch(name)
    return match.group("target") if match else None


def remove_stale_temps(directory: str, ours: Callable[[str], bool], min_age: float = 0.0) -> list[str]:
    """
    Remove the temporary files L{atomic_write} left in C{directory} when it
    was killed mid-write: files named as it names them, for a file name
    C{ours(target)} accepts, at least C{min_age} seconds old (file times
    are wall-clock time; a writer in another process, such as a login, may
    be using a young one). Anything else is left alone, and a file that
    cannot be removed is logged, never raised. Blocking; for start-up.

    @return: the names removed.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in sorted(names):
        target = temp_target(name)
        if target is None or not ours(target):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warn("could not remove {path}, left by an unfinished write: {error}", path=path, error=e.strerror)
            continue
        log.info("removed {path}, left by a write that never finished", path=path)
        removed.append(name)
    return removed


def daemon_dir(name: str, config_path: str | None, environ: Mapping[str, str]) -> str:
    """
    Where the daemon keeps its directory C{name} (C{logs}, C{static}), as
    CLIProxyAPI does: under C{$WRITABLE_PATH} when that is set, else beside
    the config file; "" with neither.
    """
    writable = environ.get("WRITABLE_PATH", "").strip()
    if writable:
        return os.path.join(os.path.normpath(writable), name)
    if not config_path:
        return ""
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), name)
