"""The peak resident memory a call adds, measured in a fresh Python process (Linux).

The process runs ``setup``, then resets its peak (writing 5 to
``/proc/self/clear_refs``), runs ``call`` and reports how far its peak
resident memory (``VmHWM``) rose above where it was: the call's own extra
memory, not the setup's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MEASURABLE = Path("/proc/self/clear_refs").exists()
"""Whether this system lets a process reset its peak (Linux)."""

_SCRIPT = """
import sys
sys.path.insert(0, {benchmarks!r})
{setup}
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
before = status("VmRSS")
{call}
print(status("VmHWM") - before)
"""


def peak_growth(setup: str, call: str) -> int:
    """The bytes the peak resident memory rose while ``call`` ran, after ``setup``
    (both Python source; the benchmarks' folder is importable)."""
    script = _SCRIPT.format(benchmarks=str(Path(__file__).parent), setup=setup, call=call)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return int(done.stdout.split()[-1])
