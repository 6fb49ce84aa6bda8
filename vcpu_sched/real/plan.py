"""A scenario's settings as a real run: the QEMU command line, the guest's scripts and the monitor
script, or the reason a row has no real counterpart on the binary at hand.

Settings fall in four kinds. A release decides some (`versions.VERSION_SETTINGS`: which fixes the binary
has); a row may only leave them to the binary or ask for exactly what it has. Some have a real
counterpart (machine type, -smp, -cpu, the guest's maxcpus= and the kdump kernel's, the workload, the
monitor script). Some are what-ifs no binary has (`nmi_fix`, `fix = lpcr-sync`, ...) or need KVM. The
rest steer only the model (engine, clock, watchdog, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import RunSettings
from ..versions import VERSION_SETTINGS, has, profile, release_key
from . import guest

MAX_SMP = 8  # more vCPUs than this take minutes to boot under TCG on a 2-core machine
MEMORY_MB = 2048  # enough for a 512 MB crash kernel region; the model's -m does not change any mechanism
# What-ifs: settings no real binary can be given, with the value every binary has.
WHAT_IFS = {"nmi_fix": False, "infer_fix": False, "psscr_ec_kvm": "dropped", "cas_pvrs": "logical",
            "guest_endian": "le", "kvm_ail_filter": False, "main_loop_hold_ns": 0}
REAL_WORKLOADS = ("none", "ipi-check", "offline-online", "smt-off-on", "offline-kdump", "smt-off-kdump", "kdump",
                  "online-rest", "busy-loop", "hotplug-online", "idle")
REAL_COMMANDS = ("system_reset", "stop", "cont", "migrate", "nmi", "info registers")  # and device_add DRIVER,...


def kvm_host() -> bool:
    """A POWER host with KVM, where `--accel kvm` rows run as they are (not tested here: no such host)."""
    import os
    import platform

    return platform.machine() in ("ppc64le", "ppc64") and os.path.exists("/dev/kvm")


class NotRun(Exception):
    """This row has no real counterpart on this binary; the message says why."""


@dataclass(frozen=True)
class Plan:
    """A real run: how to start QEMU, what the guest runs, what the monitor types, and the model's twin."""

    machine_type: str
    argv_tail: tuple[str, ...]  # everything after the binary but -kernel/-initrd/-append/-qmp/-incoming
    script: guest.Script
    monitor: tuple[tuple[str, str], ...]
    model: RunSettings  # the model at the binary's release (the destination's, across versions)
    release: str
    fresh_boot: str | None  # why a saved boot would not be faithful here (None: a restore is)
    destination: str | None = None  # the release a `migrate` loads into, when another binary's


def _check_version_settings(row: RunSettings, variant: dict[str, object], release: str) -> None:
    """A row may leave what the release decides to the binary; what it asks for explicitly, the binary
    must have."""
    wanted = profile(release)
    for key in VERSION_SETTINGS:
        if key in variant and key != "qemu_version" and variant[key] != wanted[key]:
            raise NotRun(f"needs {key}={_text(variant[key])}; QEMU {release} has {key}={_text(wanted[key])}")
    if row.fix in ("lpcr-sync", "quiesced+lpcr-sync"):
        raise NotRun(f"fix={row.fix} is a what-if no QEMU release has")


def fresh_boot_reason(row: RunSettings, release: str, carries_quiesced: bool) -> str | None:
    """Why this row must boot afresh instead of restoring a saved boot (`boots.py`), or None.

    A restore is an incoming migration of a guest that has booted and waits in its /init, so it is faithful
    exactly where the binary's migration stream carries the vCPU state the modelled mechanisms read: the
    decrementer (a TCG stream has it since 578912ad73, 8.2) and `env->quiesced` (added by fb802acdc8b, 10.0;
    in the stream since 628bda1ab7, 11.0, on machine types with rtas-stopped-state, target/ppc/machine.c;
    on older ones `cpu_post_load` infers it, wrongly for stopped and idle CPUs: docs/findings). What the
    stream leaves out the destination's own reset gives, as after any migration (`pending_interrupts`).

    One more case is found, not derived: a system reset (an NMI, or a crash's H_SIGNAL_SYS_RESET) reaching
    CPUs the kernel never started. After a migration QEMU 11.1.3 checkstops there ("machine check with
    MSR[ME]=0" on such a CPU), where a guest that booted in the same QEMU prints "Processor 1 is stuck."
    (spapr-nmi-kdump: 3 restored runs of 3 checkstopped, 2 booted of 2 did not). Until that is understood
    such rows boot.
    """
    if row.accel != "tcg":
        return "a saved boot is only made under TCG"
    never_started = 0 < row.boot_cpus < row.smp
    resets = row.workload in guest.KDUMP_WORKLOADS or any(cmd == "nmi" for _, cmd in row.monitor)
    if never_started and resets:
        return ("a system reset may reach CPUs the kernel never started, which after a migration checkstops "
                "where a booted guest does not")
    if not has(release, "578912ad73"):
        return f"QEMU {release}'s TCG migration loses the decrementer (578912ad73, 8.2)"
    if has(release, "fb802acdc8b") and not has(release, "628bda1ab7"):
        return f"QEMU {release} does not migrate env->quiesced (628bda1ab7, 11.0)"
    if has(release, "628bda1ab7") and not carries_quiesced:
        return "pseries-10.0 and older infer env->quiesced at the load (628bda1ab7), not what the boot left"
    return None


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan(row: RunSettings, variant: dict[str, object], release: str, destination: str | None = None) -> Plan:
    """The real run of `row` (whose `variant` the scenario file lists) on QEMU `release`, or NotRun. With
    `destination`, another release, each `migrate` loads into that binary: both run the source's machine
    type (`pseries-X.Y`, forward migration), and the model is at the destination's release with the
    stream the source sends (the cpu/rtas_stopped subsection only from a source with 628bda1ab7)."""
    if row.machine != "pseries":
        raise NotRun(f"machine {row.machine}: only pseries guests are run for real")
    for key, value in WHAT_IFS.items():
        if getattr(row, key) != value:
            raise NotRun(f"{key}={_text(getattr(row, key))} is a what-if no QEMU has")
    _check_version_settings(row, variant, release)
    if row.accel == "kvm" and not kvm_host():
        raise NotRun("accel=kvm needs a POWER host with KVM (`vcpu-sched real --accel kvm` there)")
    if row.smp > MAX_SMP or row.maxcpus > MAX_SMP:
        raise NotRun(f"smp={max(row.smp, row.maxcpus)}: more than {MAX_SMP} vCPUs take minutes to boot under TCG")
    if row.accel == "tcg" and row.cpu == "POWER10" and not has(release, "99082815f1"):
        raise NotRun(f"cpu=POWER10: QEMU {release}'s TCG has no ISA 3.1 prefixed instructions (99082815f1, 6.1); "
                     "Linux 6.12 stops after __start()")
    if row.accel == "tcg" and row.threads > 1 and not has(release, "dc5e072188"):
        raise NotRun(f"threads={row.threads}: QEMU {release}'s TCG runs one thread per pseries core "
                     "(SMT under TCG came with dc5e072188, 8.1)")
    if row.workload not in REAL_WORKLOADS:
        raise NotRun(f"workload {row.workload}: a crash between DLPAR's node attach and its online (the kernel does "
                     "both in one work item) cannot be placed from user space")
    if row.boots > 1 and not any(cmd == "system_reset" for _, cmd in row.monitor):
        raise NotRun("boots > 1 without a system_reset")
    for _, command in row.monitor:
        if command not in REAL_COMMANDS and command.split()[0] != "device_add":
            raise NotRun(f"monitor command {command!r} has no QMP counterpart here")
    if destination is not None and destination != release:
        machine_type, carries = _across(row, variant, release, destination)
        model = dataclasses.replace(row, **profile(destination), rtas_stopped_state=carries)
    else:
        destination = None
        model = dataclasses.replace(row, **profile(release))
        machine_type, carries = "pseries", row.rtas_stopped_state or not has(release, "628bda1ab7")
        if not carries:
            machine_type = "pseries-10.0"  # 628bda1ab7: rtas-stopped-state is off for pseries-10.0 and older
    # QEMU's topology multiplies out to maxcpus; the model's cores are the ones present at boot.
    cores = row.maxcpus // (row.sockets * row.threads) if row.maxcpus > row.smp else row.cores
    smp = f"{row.smp},sockets={row.sockets},cores={cores},threads={row.threads}"
    if row.maxcpus:
        smp += f",maxcpus={row.maxcpus}"
    cpu = "host" if row.accel == "kvm" else row.cpu.lower()  # the model's KVM rows are -cpu host
    tail = ("-machine", f"{machine_type},accel={row.accel}", "-smp", smp, "-cpu", cpu,
            "-m", str(MEMORY_MB), "-nodefaults", "-display", "none", "-serial", "stdio")
    return Plan(machine_type, tail, guest.build(row), row.monitor, model, release,
                fresh_boot_reason(row, release, carries), destination)


def _across(row: RunSettings, variant: dict[str, object], release: str, destination: str) -> tuple[str, bool]:
    """A migration from QEMU `release` into `destination`: the machine type both run, and whether the
    stream carries env->quiesced."""
    if release_key(destination) < release_key(release):
        raise NotRun(f"a migration from QEMU {release} into the older {destination}: only forward migration "
                     "is supported upstream")
    if not any(cmd == "migrate" for _, cmd in row.monitor):
        raise NotRun("a second binary only loads a migration, and this row's monitor has no migrate")
    # The source's own machine type; from 11.0 on it has rtas-stopped-state, and 628bda1ab7 sends quiesced.
    carries = has(release, "628bda1ab7")
    if "rtas_stopped_state" in variant and variant["rtas_stopped_state"] != carries:
        raise NotRun(f"rtas_stopped_state={_text(variant['rtas_stopped_state'])}: a stream from QEMU {release} "
                     f"{'carries' if carries else 'has no'} cpu/rtas_stopped subsection")
    return f"pseries-{release}", carries
