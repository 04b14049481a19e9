"""Temp folders short enough to hold Unix sockets, whose paths may not exceed 107 bytes.

Ray, multiprocessing (the DataLoader's forkserver, torch's fd sharing) and Chromium keep sockets
under the temp folder; under a deep one (a fresh clone in a long temp path) none of them can
start ("AF_UNIX path too long"). Each gets ``/tmp`` then, and only then.
"""

from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger(__name__)

# Ray: <temp>/ray/session_<date>_<pid>/sockets/<name>.
RAY_TEMP_MAX = 40
# multiprocessing: <temp>/pymp-XXXXXXXX/listener-XXXXXXXX.
PYMP_TEMP_MAX = 70


def short_socket_temp(variable: str, longest: int) -> None:
    """Point ``variable`` at ``/tmp`` when the folder it names is longer than ``longest`` characters.

    The folder is the variable's value, else the system temp folder (``TMPDIR``'s). Child processes
    inherit the variable.

    Args:
        variable: ``RAY_TMPDIR`` for Ray, ``TMPDIR`` for multiprocessing and the rest.
        longest: The longest folder whose socket paths still fit.
    """
    folder = os.environ.get(variable) or tempfile.gettempdir()
    if len(folder) <= longest:
        return
    log.debug("%s=%s is too long for Unix sockets (over %d characters); using /tmp", variable, folder, longest)
    os.environ[variable] = "/tmp"
    if variable == "TMPDIR":
        tempfile.tempdir = None  # this process's own temp folder follows
