"""A real run's console and monitor read as the model's verdicts.

The guest-visible failures are Linux's own lines (arch/powerpc/kernel/smp.c `__cpu_up`: "Processor %d is
stuck."; platforms/pseries/smp.c `smp_startup_cpu`: "start-cpu failed: %i"; hotplug-cpu.c
`pseries_cpu_die`: "didn't die after 120 seconds"; the RCU stall detector), or the guest script's when
it counts CPUs as the model's guest does. A monitor command that never answers is a lockup: the main loop
waits for the BQL, as the model's watchdog reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..verdicts import BAD_RTAS_ANSWER, LOST_INTERRUPTS, STUCK_CPU
from .guest import DONE, HARNESS, RTAS_TRACE

FAILURES = (
    (re.compile(r"Processor \d+ is stuck"), STUCK_CPU),
    (re.compile(r"vcpu-sched: only \d+ of \d+ CPUs online"), STUCK_CPU),
    (re.compile(r"start-cpu failed|RTAS query-cpu-stopped-state failed|didn't die after"), BAD_RTAS_ANSWER),
    (re.compile(r"did not answer an IPI|rcu_sched (self-)?detected stall|rcu: INFO: .* detected stalls"),
     LOST_INTERRUPTS),
)
# Lines worth showing as evidence besides the failures: the workload's markers and what the kernel said
# about bringing CPUs up and crashing.
EVIDENCE = re.compile(r"smp: |loop \d+:|kdump: |dlpar: |(?<!cpu)idle: |busy-loop: |sysrq: |Kernel panic|kexec: |"
                      r"Starting crashdump kernel|vcpu-sched: |cpu \d+ (added|removed)|" + re.escape(RTAS_TRACE))


@dataclass
class Reading:
    """What the run showed, line by line, and the monitor's answers (or their absence)."""

    console: list[str] = field(default_factory=list)
    qmp: list[str] = field(default_factory=list)
    lockup: str | None = None  # the monitor command that never answered, and for how long
    harness: str | None = None  # the guest script could not do its part (not a verdict about QEMU)
    ended: str | None = None  # why the run ended before the guest's last line (deadline, QEMU exited)
    boot: str = ""  # how the guest got to its script: a saved boot restored, or a fresh boot and why

    @property
    def done(self) -> bool:
        return any(line.strip() == DONE for line in self.console)


def failures(console: list[str]) -> list[tuple[str, str]]:
    """(verdict, line) for each console line that shows a guest-visible failure."""
    out = []
    for line in console:
        for pattern, kind in FAILURES:
            if pattern.search(line):
                out.append((kind, line.strip()))
                break
    return out


def verdict(reading: Reading, plain_boot: bool) -> tuple[str, str]:
    """(verdict, reason) as the model would say it."""
    if reading.lockup is not None:
        return "lockup", reading.lockup
    found = failures(reading.console)
    if found:
        first = found[0][0]
        return first, "; ".join(line for kind, line in found if kind == first)
    if reading.done:
        return ("booted" if plain_boot else "completed"), "the guest did everything its script asks"
    return "deadline", reading.ended or "the run ended before the guest finished"


RTAS_CALL = re.compile(r"\[(?P<cpu>\d+)\].*?(?P<t>\d+\.\d+): rtas_(?P<dir>input|output): (?P<name>[\w-]+) "
                       r"(?:arguments: (?P<args>\{[^}]*\})|"
                       r"status: (?P<status>-?\d+), other outputs: (?P<outs>\{[^}]*\}))")


def rtas_line(line: str) -> str | None:
    """A traced RTAS call (rtas_input, rtas_output) in a few words; None for any other line."""
    m = RTAS_CALL.search(line)
    if m is None or RTAS_TRACE not in line:
        return None
    if m["dir"] == "input":
        return f"rtas: [{float(m['t']):10.6f}] CPU {int(m['cpu'])} calls {m['name']} {m['args']}"
    return f"rtas: [{float(m['t']):10.6f}] CPU {int(m['cpu'])}   {m['name']} answers status {m['status']} {m['outs']}"


def evidence(reading: Reading) -> list[str]:
    """The console lines behind the verdict: failures, the workload's markers, RTAS calls traced."""
    out = []
    for line in reading.console:
        rtas = rtas_line(line)
        if rtas is not None:
            out.append(rtas)
        elif EVIDENCE.search(line) or any(p.search(line) for p, _ in FAILURES):
            out.append(line.rstrip())
    return out


def check_harness(line: str) -> str | None:
    """The guest script's own error (kexec -p failed, a crash that returned), or None."""
    return line.split(HARNESS, 1)[1].strip() if HARNESS in line else None
