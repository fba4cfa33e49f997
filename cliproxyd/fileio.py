"""
Durable file replacement, shared by everything that rewrites a file the
operator owns: the state file, credential files and config.yaml.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import suppress


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
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
