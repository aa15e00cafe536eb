"""Files the tool writes for people: the mode a plain open() would give them."""

from __future__ import annotations

import os


def created_mode() -> int:
    """0o666 less the process umask: the mode `open(path, "w")` gives a new file. Files written
    through tempfile.mkstemp (for an atomic rename) start at 0o600 and are set to this, so a report
    shared through a group-readable directory stays readable there, as the user's umask intends."""
    try:  # Linux shows the umask without changing it (os.umask can only read it by setting it)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # set and put back at once; 0o077 errs on the private side meanwhile
    os.umask(mask)
    return 0o666 & ~mask
