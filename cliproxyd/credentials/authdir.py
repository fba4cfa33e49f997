"""
The credential files of an C{auth-dir} as the management API changes them:
listed, read, written, deleted and edited one at a time, off the reactor
thread.

Every change (a write, a delete, an edit's read-change-write) runs under one
L{DeferredLock}, so two requests never interleave on the directory and an
edit never works on a stale copy. Writes are atomic (L{atomic_write}: a
temporary file, fsync, rename) and keep the file's mode, C{0600} for a new
file. Names are checked first, strictly: a file name ending in C{.json}, not
hidden, with no path, no control character and of a sane length
(L{valid_name}).
"""

from __future__ import annotations

import errno
import os
import unicodedata
from typing import AbstractSet, Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from cliproxyd.credentials.authfiles import AuthFileError, auth_file_names, parse_account
from cliproxyd.fileio import atomic_write

RunInThread = Callable[..., "Deferred[Any]"]

#: The longest name, in UTF-8 bytes: below the 255 a Linux file name may
#: have, leaving room for the temporary file an atomic write makes beside it.
MAX_NAME_BYTES = 200


class InvalidName(ValueError):
    """Not a name a credential file may have; C{str()} says why."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"name {problem}")


def valid_name(name: str | None) -> str:
    """
    C{name}, if it may name a credential file of the directory: a file name
    ending in C{.json} (something before it), no path (C{/}, C{\\}), not
    hidden (no leading dot), with no control, format or separator character
    (spaces between words are allowed), no quote, at most
    L{MAX_NAME_BYTES} bytes.

    @raise InvalidName: saying which rule C{name} breaks.
    """
    if not name:
        raise InvalidName("is required: a file name ending in .json")
    if "/" in name or "\\" in name:
        raise InvalidName("must be a file name, with no path")
    if name.startswith("."):
        raise InvalidName("must not start with a dot")
    if any(_odd(c) for c in name):
        raise InvalidName("must not contain control characters, line breaks or quotes")
    if not name.endswith(".json"):
        raise InvalidName("must end in .json")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidName(f"must be at most {MAX_NAME_BYTES} bytes long (UTF-8)")
    return name


class ReservedName(InvalidName):
    """The name of one of the daemon's own files in the directory (its state file): never written as a credential."""

    def __init__(self, name: str) -> None:
        ValueError.__init__(self, f"{name} is cliproxyd's own file (state-file), not a credential file")


def _odd(c: str) -> bool:
    """A character no credential file name has: control, format, surrogate, unassigned, a break, a quote."""
    if c == " ":
        return False
    category = unicodedata.category(c)
    return category[0] in "CZ" or c == '"'


@frozen
class AuthFileInfo:
    """One credential file as a listing shows it."""

    name: str
    size: int
    #: the modification time, in seconds since the epoch
    mtime: float


class AuthDir:
    """
    The credential files of C{directory}; blocking work goes to
    C{run_in_thread(f, *args)} (L{deferToThread} by default, tests pass a
    synchronous one). Every method that takes a name raises L{InvalidName}
    for a bad one before touching the disk; a file that is not there fails
    the Deferred with L{FileNotFoundError}.

    The names in C{skip} (L{cliproxyd.credentials.authfiles.daemon_files}:
    the state file) are the daemon's own files: never listed, and as
    credential files they do not exist (L{FileNotFoundError}); writing one
    raises L{ReservedName}.
    """

    log = Logger()

    def __init__(self, directory: str, run_in_thread: RunInThread = deferToThread,
                 skip: AbstractSet[str] = frozenset()) -> None:
        self.directory = directory
        self.skip = skip
        self._run = run_in_thread
        self._lock = DeferredLock()

    def path(self, name: str | None) -> str:
        """The file C{name} names (checked by L{valid_name}; one of C{skip} raises L{FileNotFoundError})."""
        path = os.path.join(self.directory, valid_name(name))
        if name in self.skip:
            raise FileNotFoundError(errno.ENOENT, "not a credential file", path)
        return path

    def files(self) -> "Deferred[list[AuthFileInfo]]":
        """The credential files (see L{auth_file_names}), sorted by name; none for a missing directory."""
        return self._run(self._files)

    def read(self, name: str) -> "Deferred[bytes]":
        """The bytes of the file C{name}."""
        return self._run(_read, self.path(name))

    def write(self, name: str, data: bytes) -> "Deferred[None]":
        """Replace (or create, mode C{0600}) the file C{name} with C{data}, atomically."""
        if name in self.skip:
            raise ReservedName(name)
        return self._lock.run(self._run, atomic_write, self.path(name), data)

    def delete(self, name: str) -> "Deferred[None]":
        """Remove the file C{name}."""
        return self._lock.run(self._run, os.unlink, self.path(name))

    def edit(self, name: str, change: Callable[[dict[str, Any]], None]) -> "Deferred[None]":
        """
        Read the OAuth credential in the file C{name}, let C{change} alter its
        JSON object in place (in the thread: it must not touch the reactor),
        check that the result still parses and write it, all under the lock.

        @return: a Deferred failing with L{AuthFileError} when the file is
            not a credential we serve or the change makes it unusable
            (nothing is written), or with L{FileNotFoundError}.
        """
        return self._lock.run(self._run, _edit, self.path(name), change)

    # -- in the thread ------------------------------------------------------------------

    def _files(self) -> list[AuthFileInfo]:
        try:
            names = auth_file_names(self.directory, self.skip)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                st = os.stat(os.path.join(self.directory, name))
            except OSError:
                continue  # removed meanwhile
            out.append(AuthFileInfo(name, st.st_size, st.st_mtime))
        return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _edit(path: str, change: Callable[[dict[str, Any]], None]) -> None:
    account = parse_account(path, _read(path))
    if account is None:
        raise AuthFileError("not an OAuth credential cliproxyd serves")
    change(account.data)
    data = account.to_bytes()
    parse_account(path, data)  # raises for a change that breaks the file
    atomic_write(path, data)
