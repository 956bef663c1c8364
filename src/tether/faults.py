"""Named crash points for the crash tests.

`crash_point("provision.after_provider")` does nothing unless the environment variable
`TETHER_CRASH_AT` names that point (several: comma-separated), which only the tests set. Then
the whole process ends at once with SIGKILL, as a power cut or the OOM killer would end it: no
`finally`, no atexit, no flushing. `TETHER_CRASH_AT` is read at every call, so a test may arm a
point in a running process's environment only before starting it.
"""

from __future__ import annotations

import os
import signal

ENV = "TETHER_CRASH_AT"


def armed(name: str) -> bool:
    value = os.environ.get(ENV)
    return bool(value) and name in {p.strip() for p in value.split(",")}


def crash_point(name: str) -> None:
    """End the process abruptly here when the tests armed `name`."""
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)
