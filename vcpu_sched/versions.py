"""QEMU releases the model can be set to, and which of the modelled upstream commits each one contains.

Each commit's first release comes from its VERSION file (`git show COMMIT:VERSION` on a fork carrying
upstream history): a development version X.Y.50 or X.Y.9x first ships in the next release.

| commit | VERSION at the commit | first release | what it changes in the model |
| --- | --- | --- | --- |
| aef92d87c5 (pseries: fix kvmppc_set_fwnmi) | 5.0.91 | 5.1 | `fwnmi_fix` |
| ef149763a8 + dd47a8f654 (force_rcu notifier) | 6.1.50 | 6.2 | `force_rcu` |
| e8291ec16da8 (timebase register reset state) | 9.2.50 | 10.0 | `timebase_reset = applied` |
| fb802acdc8b (ppc/spapr: Fix RTAS stopped state) | 9.2.90 | 10.0 | `fix = quiesced` |
| 9a191d3782 + 871de7078f (qemu_process_cpu_events) | 10.1.50 | 10.2 | the vCPU loop |
| dcb46ecb2e + f8217ae54e (cpu_exit kicks; kick with cpu_exit) | 10.1.50 | 10.2 | `cpu_exit` and its call sites |
| 55d98e3ede (rcu: force quiescent state; its revert and reapply are both 10.2.50) | 10.1.50 | 10.2 | rcu.py |
| 628bda1ab7 (Fix env->quiesced migration) | 10.2.50 | 11.0 | `fix = quiesced+migration` |
| a1c2dfee4f (Skip system reset for quiesced CPUs) | 11.0.50 | 11.1 | `sysreset_fix` |

Three more commits decide what a real binary can run or shows, though the model has no switch for them:
99082815f1 (target/ppc: prefixed instructions, 6.0.50, so 6.1): before it TCG's POWER10 lacks ISA 3.1's
prefixed instructions and Linux 6.12 stops after "Booting Linux via __start()"; dc5e072188 (spapr: TCG
allow up to 8-thread SMT, 8.0.50, so 8.1): before it TCG pseries runs one thread per core; 578912ad73
(target/ppc: Migrate DECR SPR, 8.1.50, so 8.2): before it a TCG migration loses the decrementer timer
("lost decrementer interrupt on migration that can cause hangs").

Debian's builds (bookworm 7.2, bullseye 5.2, trixie-backports 11.1) carry none of these as patches.
"""

from __future__ import annotations

import functools
from typing import Any

RELEASES = ("5.2", "7.2", "9.2", "10.0", "10.1", "10.2", "11.0", "11.1")
FIRST_RELEASE = {
    "aef92d87c5": "5.1",
    "ef149763a8": "6.2",
    "e8291ec16da8": "10.0",
    "fb802acdc8b": "10.0",
    "9a191d3782": "10.2",
    "f8217ae54e": "10.2",
    "55d98e3ede": "10.2",
    "628bda1ab7": "11.0",
    "a1c2dfee4f": "11.1",
    "99082815f1": "6.1",
    "dc5e072188": "8.1",
    "578912ad73": "8.2",
}
# The settings a release decides: what `--qemu-version` sets, and what a real binary's row cannot vary.
VERSION_SETTINGS = ("qemu_version", "fix", "timebase_reset", "fwnmi_fix", "force_rcu", "sysreset_fix")


@functools.cache  # has() asks it tens of thousands of times in a 2048-vCPU run
def release_key(version: str) -> tuple[int, int]:
    """(major, minor) of "11.1", "11.1.3" or "10.2.50"; a development version counts as the next release."""
    parts = [int(p) for p in version.split(".")[:3]]
    major, minor = parts[0], parts[1] if len(parts) > 1 else 0
    if len(parts) > 2 and parts[2] >= 50:
        return (major + 1, 0) if minor >= 2 else (major, minor + 1)
    return major, minor


def release_of(version: str) -> str:
    """The modelled release closest below `version` (a binary's "11.1.3" is "11.1"; "8.2.1" is "7.2")."""
    key = release_key(version)
    known = [r for r in RELEASES if release_key(r) <= key]
    if not known:
        raise ValueError(f"QEMU {version} is older than every modelled release ({RELEASES[0]})")
    return known[-1]


@functools.cache  # asked on the vCPU threads' paths (exit_or_kick, rcu, timebase)
def has(version: str, commit: str) -> bool:
    """Does QEMU `version` contain upstream `commit`?"""
    return release_key(version) >= release_key(FIRST_RELEASE[commit])


def new_loop(version: str) -> bool:
    """QEMU 10.2's vCPU loop (qemu_process_cpu_events, clearing exit_request) or the older one."""
    return has(version, "9a191d3782")


def cpu_events_function(version: str) -> str:
    """The name of the function a vCPU thread calls after running guest code, in QEMU `version`."""
    return "qemu_process_cpu_events" if new_loop(version) else "qemu_wait_io_event"


def profile(version: str) -> dict[str, Any]:
    """The settings of the model at QEMU `version`: each modelled commit in or out."""
    if has(version, "628bda1ab7"):
        fix = "quiesced+migration"
    elif has(version, "fb802acdc8b"):
        fix = "quiesced"
    else:
        fix = "none"
    return {"qemu_version": version, "fix": fix,
            "timebase_reset": "applied" if has(version, "e8291ec16da8") else "reverted",
            "fwnmi_fix": has(version, "aef92d87c5"), "force_rcu": has(version, "ef149763a8"),
            "sysreset_fix": has(version, "a1c2dfee4f")}
