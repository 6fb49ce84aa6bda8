"""The real guest's /init: a busybox shell script that does what the model's guest workload does.

The script prints the model's own console lines as markers (`model/guest.py`), so a scenario's monitor
patterns match the real console as they match the model's; the vCPU work is the kernel's, through sysfs
(`/sys/devices/system/cpu/cpuN/online`), `/proc/sysrq-trigger` and `kexec -p`. Where a monitor command is
to act, the script prints `vcpu-sched: waiting for the monitor` and spins on CPU 0 until a line comes
on the console: the tool sends it once the command is done (the model's guest goes on computing in guest
time instead, which `offline_hold_ns` makes long enough). It spins rather than sleeps because the model's
guest computes there: a boot CPU idle in H_CEDE at a migration is another case (docs/real-qemu.md: the idle boot
CPU). A reader of the kernel's RTAS tracepoints prints each CPU start/stop call and its answer as it
happens. At the end the script prints `vcpu-sched: done`, then powers off.

Every run boots the same /init (`BOOT_INIT`): it prints `vcpu-sched: ready for the script` and reads the
row's script from the console, up to `vcpu-sched: end of script`. So everything before that line depends
only on the QEMU command line and the kernel's, and a saved state of a guest waiting there serves every row
that shares them (`boots.py`). The kdump kernel's /init is one for all rows too: the number of CPUs it
expects comes on its command line (`vcpu_sched_want=`).
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass

from ..config import RunSettings

DONE = "vcpu-sched: done"
WAITING = "vcpu-sched: waiting for the monitor"
HARNESS = "vcpu-sched: harness error:"
RTAS_TRACE = "rtas-trace:"
KDUMP_FLAG = "vcpu_sched_kdump"
RTAS_EVENTS = "powerpc:rtas_input,powerpc:rtas_output"
KDUMP_WORKLOADS = ("kdump", "offline-kdump", "smt-off-kdump", "hotplug-kdump", "idle")
READY = "vcpu-sched: ready for the script"
END_OF_SCRIPT = "vcpu-sched: end of script"
READY_MARK = "vcpu-sched-boot-traced"  # written to the trace buffer after the boot
DRAINED_MARK = "vcpu-sched-run-traced"  # and at the end, before the power-off
HOLD = "# hold"  # where the model's guest spends offline_hold_ns: a monitor command may act there

PRELUDE = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
cpus_online() { n=0; for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ "$(cat $c/online 2>/dev/null || echo 1)" = 1 ] && n=$((n + 1)); done; echo $n; }
cpu_on() { echo 1 > /sys/devices/system/cpu/cpu$1/online || echo "vcpu-sched: onlining CPU $1 failed"; }
cpu_off() { echo 0 > /sys/devices/system/cpu/cpu$1/online || echo "vcpu-sched: offlining CPU $1 failed"; }
exec 3<&0  # the console: a background job's own stdin would be /dev/null
ready() { mkdir /tmp/ready 2>/dev/null && echo "__READY__"; }  # once, whoever comes first
wait_monitor() { echo "__WAITING__"; (read -r _line <&3; : > /tmp/go) &
  taskset -c 0 sh -c 'until [ -e /tmp/go ]; do :; done'; rm -f /tmp/go; }
while read -r line; do case "$line" in *start-cpu*|*stop-self*|*query-cpu-stopped-state*)
  echo "__RTAS__ $line";; *__MARK__*) ready;; *__DRAINED__*) : > /tmp/drained;;
  esac; done < /sys/kernel/tracing/trace_pipe &
traced() {  # spin (bounded) until the trace reader has printed everything traced before the mark $1
  i=0; if echo "$1" 2>/dev/null > /sys/kernel/tracing/trace_marker; then
    while [ ! -e "$2" ] && [ $i -lt 100000 ]; do i=$((i + 1)); done; fi; }
finish() { traced __DRAINED__ /tmp/drained; echo "__DONE__"; sync; poweroff -f; }
""".replace("__WAITING__", WAITING).replace("__RTAS__", RTAS_TRACE).replace("__DONE__", DONE).replace(
    "__MARK__", READY_MARK).replace("__READY__", READY).replace("__DRAINED__", DRAINED_MARK)

# The console does not echo what the tool types (the script's markers would show twice); the script is
# sourced, so it calls the prelude's functions. READY comes from the trace reader once it reaches a mark
# written after the boot: every RTAS call of the boot is on the console before it, so a saved boot has
# them all. /init spins meanwhile: with every CPU idle, QEMU 11.1's TCG guest woke the reader only some
# 30 s later. Without tracefs, or if the reader never gets there, /init says it itself. `finish` waits the
# same way, so the run's last RTAS calls are not lost at the power-off.
BOOT_INIT = PRELUDE + r"""stty -echo 2>/dev/null
traced __MARK__ /tmp/ready
ready
: > /tmp/row.sh
while IFS= read -r line <&3; do [ "$line" = "__END__" ] && break; printf '%s\n' "$line" >> /tmp/row.sh; done
. /tmp/row.sh
""".replace("__MARK__", READY_MARK).replace("__READY__", READY).replace("__END__", END_OF_SCRIPT)

KDUMP_INIT = PRELUDE + r"""for word in $(cat /proc/cmdline); do
  case "$word" in vcpu_sched_want=*) want=${word#*=};; esac; done
echo "kdump: kernel booted, saving vmcore"
echo "kdump: $(cpus_online) CPUs online"
[ "$(cpus_online)" -ge "$want" ] || echo "vcpu-sched: only $(cpus_online) of $want CPUs online"
finish
"""


@dataclass(frozen=True)
class Script:
    """The row's script (sent to `BOOT_INIT` on the console), the kernel command lines (the kdump
    kernel's, or None), and for each monitor entry whether the guest waits for its command."""

    body: str
    cmdline: str
    kdump_cmdline: str | None
    waits: tuple[bool, ...] = ()


def _booted(settings: RunSettings) -> list[int]:
    """The CPUs Linux brings up at boot: `boot_cpus` (maxcpus=) or all."""
    return list(range(settings.boot_cpus or settings.smp))


def _wanted_lines(count: str, wanted: int) -> list[str]:
    return [f'[ "{count}" -ge {wanted} ] || echo "vcpu-sched: only {count} of {wanted} CPUs online"']


def _offline(cpus: list[int], what: str, loop: int) -> list[str]:
    return [*(f"cpu_off {n}" for n in cpus), f'echo "loop {loop}: {len(cpus)} {what} offline"', HOLD]


def _crash(cpu: int) -> list[str]:
    return [f"taskset -c {cpu} sh -c 'echo c > /proc/sysrq-trigger'",
            f'echo "{HARNESS} the crash on CPU {cpu} returned"']


def _crash_cpu(settings: RunSettings, online: list[int]) -> int:
    """The model's kdump workload: `crash_cpu`, else one drawn from the seed among the online CPUs."""
    if settings.crash_cpu in online:
        return settings.crash_cpu
    return random.Random(f"real-crash:{settings.seed}").choice(online)


def workload_lines(settings: RunSettings) -> list[str]:
    """The workload, unrolled: each marker a literal line, so monitor patterns can be placed."""
    booted = _booted(settings)
    secondaries = [n for n in booted if n]
    smt = [n for n in booted if n % settings.threads]
    work = settings.workload
    lines: list[str] = []
    if work in ("offline-online", "smt-off-on"):
        cpus, what = (secondaries, "secondary CPUs") if work == "offline-online" else (smt, "SMT threads")
        for loop in range(1, settings.loops + 1):
            lines += _offline(cpus, what, loop)
            lines += [f"cpu_on {n}" for n in cpus]
            lines.append(f'echo "loop {loop}: $(cpus_online) CPUs online"')
        lines += _wanted_lines("$(cpus_online)", len(booted))
    elif work in ("offline-kdump", "smt-off-kdump"):
        cpus, what = (secondaries, "secondary CPUs") if work == "offline-kdump" else (smt, "SMT threads")
        lines += _offline(cpus, what, 1) + _crash(0)
    elif work == "kdump":
        lines += _crash(_crash_cpu(settings, booted))
    elif work == "online-rest":
        lines += [f"cpu_on {n}" for n in range(1, settings.smp) if n not in booted]
        lines.append('echo "smp: $(cpus_online) CPUs online"')
        lines += _wanted_lines("$(cpus_online)", settings.smp)
    elif work == "ipi-check":
        for n in secondaries:
            lines.append(f"timeout 5 taskset -c {n} true || echo \"smp: CPU {n} did not answer an IPI within 1 s\"")
        lines.append(f'echo "smp: {len(secondaries)} CPUs answered IPIs"')
    elif work == "busy-loop":
        # 10 s on CPU 0 with no fork (a `date` per turn would let CPU 0 idle while its child runs): the
        # uptime is read by the shell's own `read`, and `[` is a builtin
        lines += ['echo "busy-loop: CPU 0 spins in guest code"',
                  "taskset -c 0 sh -c 'read -r t _ < /proc/uptime; end=$((${t%.*} + 10)); "
                  "while read -r t _ < /proc/uptime && [ ${t%.*} -lt $end ]; do :; done'",
                  'echo "busy-loop: done"']
    elif work in ("hotplug-online", "hotplug-kdump"):
        wanted = len(booted) + settings.threads
        lines += ['echo "dlpar: waiting for a CPU to be added"',
                  f'i=0; while [ "$(cpus_online)" -lt {wanted} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done',
                  'echo "smp: $(cpus_online) CPUs online after the hotplug"']
        lines += _wanted_lines("$(cpus_online)", wanted)
        if work == "hotplug-kdump":
            lines += _crash(_crash_cpu(settings, booted))
    elif work == "idle":
        lines += ['echo "idle: waiting for an NMI"', "while :; do sleep 1; done"]
    return lines


def place_waits(lines: list[str], patterns: list[str], hold_ns: int) -> tuple[list[str], list[bool]]:
    """The script with the monitor's waits, and whether the guest waits for each pattern's command.

    A pattern that matches a marker followed by a hold waits there (the hold is where the model's guest
    stays for `offline_hold_ns`); one that matches another marker (a busy loop starting, a guest that
    polls for a hotplugged CPU or idles until an NMI) does not wait: the guest goes on as the model's
    does. A pattern no marker matches is a kernel line, printed before /init runs: it waits at the start.
    """
    out = list(lines)
    waits: list[bool] = []
    at = 0
    for pattern in patterns:
        for i in range(at, len(out)):
            if out[i].startswith("echo ") and pattern in out[i]:
                holds = i + 1 < len(out) and out[i + 1] == HOLD
                if holds:
                    out[i + 1] = "wait_monitor"
                waits.append(holds)
                at = i + 1
                break
        else:
            waits.append(True)
    hold = [f"sleep {hold_ns / 1e9:.3f}"] if hold_ns else []
    body = [x for line in out for x in (hold if line == HOLD else [line])]
    starts = sum(1 for pattern, waited in zip(patterns, waits, strict=True)
                 if waited and not any(line.startswith("echo ") and pattern in line for line in lines))
    return ["wait_monitor"] * starts + body, waits


def build(settings: RunSettings) -> Script:
    """The scripts and command lines of a run with `settings` (already checked to have a real counterpart)."""
    kdump = settings.workload in KDUMP_WORKLOADS
    cmdline = ["console=hvc0", f"trace_event={RTAS_EVENTS}"]
    if settings.boot_cpus:
        cmdline.append(f"maxcpus={settings.boot_cpus}")
    if not settings.radix:
        cmdline.append("disable_radix")
    kdump_cmdline = None
    lines = workload_lines(settings)
    body, waits = place_waits(lines, [pattern for pattern, _ in settings.monitor], settings.offline_hold_ns)
    if kdump:
        cmdline.append("crashkernel=512M")
        kdump_cmdline = " ".join(["console=hvc0", f"maxcpus={settings.kdump_cpus}", KDUMP_FLAG,
                                  f"vcpu_sched_want={min(settings.kdump_cpus, settings.smp)}",
                                  f"trace_event={RTAS_EVENTS}"])
        # kexec-tools' -s loads with kexec_file_load (the kernel builds the device tree); without it, the
        # kit's kexec-tools 2.0.25 uses kexec_load (fs2dt builds it)
        syscall = "-s " if settings.kexec_syscall == "kexec_file_load" else ""
        body.insert(0, f"kexec {syscall}-p /vmlinux --initrd=/kdump.cpio --append={shlex.quote(kdump_cmdline)} "
                    f'|| echo "{HARNESS} kexec -p failed"')
    body.append("finish")
    return Script("\n".join(body) + "\n", " ".join(cmdline), kdump_cmdline, tuple(waits))
