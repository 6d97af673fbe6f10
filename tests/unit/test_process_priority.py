"""The launcher lowers Triton's priority for its session as a whole, not only for its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from passerelle_stack.launcher import lower_priority

AUTOGROUP = Path("/proc/self/autogroup")


def _autogroups_in_effect() -> bool:
    """The kernel shows a process's autogroup only while it schedules by autogroups: not when the
    feature is off, and not in a CPU cgroup of its own (a container), where the file reads empty."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
        return enabled and bool(AUTOGROUP.read_text().split())
    except OSError:
        return False


@pytest.mark.skipif(not _autogroups_in_effect(), reason="this process is not scheduled by autogroup (off, or in a container's cgroup)")
def test_a_niced_session_is_niced_as_a_group() -> None:
    report = "import os, sys; sys.stdout.write(f'{os.getpriority(os.PRIO_PROCESS, 0)}|' + open('/proc/self/autogroup').read())"
    child = subprocess.Popen(
        [sys.executable, "-c", report],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: lower_priority(7),
    )
    out, _ = child.communicate(timeout=30)
    process_niceness, autogroup = out.split("|")
    mine = AUTOGROUP.read_text().split()[0]
    assert int(process_niceness) == 7
    assert autogroup.split()[0] != mine, "the child should be in a session (and so an autogroup) of its own"
    assert autogroup.split()[-2:] == ["nice", "7"], autogroup
