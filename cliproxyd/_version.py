"""
cliproxyd's version, and what is known of the build it runs from (for the
management API's C{X-CPA-VERSION}, C{X-CPA-COMMIT} and
C{X-CPA-BUILD-DATE} headers).
"""

from __future__ import annotations

import datetime
import functools
import json

__version__ = "0.1.0"

#: What a build fact shows when it is not known (the panel shows its own "unknown" then).
UNKNOWN = "unknown"


@functools.lru_cache(maxsize=1)
def build_info() -> tuple[str, str, str]:
    """
    C{(version, commit, build date)}, worked out once (it reads the
    installed package's metadata: call it at start-up, never per request).

    The commit is the one the installer recorded (C{pip install git+URL}
    writes it to C{direct_url.json}); the build date is when the package
    was installed (its metadata file's time, ISO 8601 in UTC). Either is
    L{UNKNOWN} when the install did not record it.
    """
    commit = build_date = UNKNOWN
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            dist = distribution("cliproxyd")
        except PackageNotFoundError:
            return __version__, commit, build_date
        direct = dist.read_text("direct_url.json")
        if direct:
            vcs = json.loads(direct).get("vcs_info") or {}
            commit = str(vcs.get("commit_id") or UNKNOWN)
        for f in dist.files or ():
            if f.name == "METADATA":
                stamp = f.locate().stat().st_mtime  # type: ignore[union-attr]
                build_date = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
                break
    except Exception:
        pass  # a build fact that cannot be read is unknown, never an error
    return __version__, commit, build_date
