"""The s390x guest: a Linux-like boot that starts its secondaries with SIGP, and a SIGP stress test.

The boot follows Linux arch/s390/kernel/smp.c (6.12): `__cpu_up` first resets the secondary (SIGP INITIAL
CPU RESET; a CPU that does not accept it is not brought up, -EIO), then allocates its lowcore and sets its
prefix (`pcpu_alloc_lowcore`: SIGP SET PREFIX), then `pcpu_start_fn` sends SIGP RESTART, whose restart
interrupt enters `smp_start_secondary`; every SIGP is retried while it answers BUSY (`__pcpu_sigp_relax`).
The `sigp-cross` workload is a kvm-unit-tests style stress test, not Linux code: CPU 0 and CPU 1 meet at
a barrier in guest memory, then each sends the other a SIGP that QEMU handles (START, accepted and
without effect on an operating CPU), `loops` times.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ...verdicts import STUCK_CPU
from ..guest import Compute, GuestProgram, SpinUntil
from .kvm import EnabledWait, Servc, Sigp
from .sigp import (
    RESTART_PSW_ADDR,
    SIGP_CC_BUSY,
    SIGP_CC_ORDER_CODE_ACCEPTED,
    SIGP_INITIAL_CPU_RESET,
    SIGP_RESTART,
    SIGP_SET_PREFIX,
    SIGP_START,
)

if TYPE_CHECKING:
    from ..machine import Machine

IPL_PSW_ADDR = 0x10000  # the kernel's startup code, where the IPL PSW points
MS = 1_000_000
CALLIN_TIMEOUT_NS = 5_000_000_000
BARRIER_TIMEOUT_NS = 10_000_000_000
RELAX_NS = 1_000  # cpu_relax between two BUSY answers
# Between the barrier and the SIGP each CPU works LOOP_BODY_NS, plus 0-`sigp_jitter_us` us drawn from the
# seed: with no jitter the two SIGP exits always fall inside each other's window (QEMU's exit path up to
# the kick, a register get long); with some, only in some rounds.
LOOP_BODY_NS = 1_000


def sigp_retry(order: int, dst: int) -> Generator[Any, Any, tuple[int, int]]:
    """__pcpu_sigp_relax: SIGP until the answer is not BUSY; the program gets (cc, status)."""
    while True:
        answer: tuple[int, int] = yield Sigp(order, dst)
        if answer[0] != SIGP_CC_BUSY:
            return answer
        yield Compute(RELAX_NS, "cpu_relax")


def _reached(words: dict[str, int], name: str, value: int) -> Callable[[], bool]:
    return lambda: words.get(name, 0) >= value


def _called_in(machine: Machine, n: int) -> Callable[[], bool]:
    return lambda: n in machine.guest_memory.callin_map


def boot_program(machine: Machine) -> GuestProgram:
    """IPL, start_kernel, smp_init bringing every secondary up, the workload, then idle."""
    out = machine.outcome
    yield Compute(20 * MS, "IPL: startup, early setup")
    yield Servc("Linux version 6.12.0 (vcpu_sched guest) s390x")
    yield Compute(machine.rng.randint(200, 300) * MS, "start_kernel up to smp_init")
    yield Servc("smp: Bringing up secondary CPUs ...")
    out.online = {0}
    for n in range(1, machine.settings.smp):
        cc, _ = yield from sigp_retry(SIGP_INITIAL_CPU_RESET, n)
        if cc != SIGP_CC_ORDER_CODE_ACCEPTED:
            continue  # __cpu_up: -EIO
        yield from sigp_retry(SIGP_SET_PREFIX, n)
        yield from sigp_retry(SIGP_RESTART, n)
        if not (yield SpinUntil(_called_in(machine, n), CALLIN_TIMEOUT_NS, f"callin of CPU {n}")):
            yield Servc(f"Processor {n} is stuck.")
            out.fail(STUCK_CPU, f"Processor {n} is stuck.")
            continue
        out.online.add(n)
    count = len(out.online)
    yield Servc(f"smp: Brought up 1 node, {count} CPU{'s' if count != 1 else ''}")
    out.boots += 1
    cross = machine.settings.workload == "sigp-cross" and 1 in out.online
    if cross and (yield from sigp_cross(machine, 0, 1)):
        done = machine.guest_memory.words
        yield SpinUntil(lambda: done.get("sigp-cross-done:1", 0) == 1, BARRIER_TIMEOUT_NS, "partner done")
        yield Servc(f"sigp-cross: {machine.settings.loops} rounds of SIGP START between CPU 0 and CPU 1")
    machine.guest_finished()
    while True:
        yield EnabledWait()


def secondary_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """The restart interrupt's handler -> smp_start_secondary: call in, the workload's part, idle."""
    mem = machine.guest_memory
    yield Compute(machine.rng.randint(200, 400) * 1000, "smp_start_secondary")
    mem.callin_map.add(cpu_index)
    mem.changed.broadcast()
    if machine.settings.workload == "sigp-cross" and cpu_index == 1:
        yield from sigp_cross(machine, 1, 0)
        mem.words["sigp-cross-done:1"] = 1
        mem.changed.broadcast()
    while True:
        yield EnabledWait()


def sigp_cross(machine: Machine, me: int, partner: int) -> Generator[Any, Any, bool]:
    """Meet the partner at a barrier, then SIGP START it; `loops` rounds. True if every round passed."""
    mem, out = machine.guest_memory, machine.outcome
    words = mem.words
    for r in range(1, machine.settings.loops + 1):
        words[f"sigp-cross:{me}"] = r
        mem.changed.broadcast()
        met = yield SpinUntil(_reached(words, f"sigp-cross:{partner}", r), BARRIER_TIMEOUT_NS, f"barrier {r}")
        if not met:
            yield Servc(f"sigp-cross: CPU {partner} never reached round {r}")
            out.fail(STUCK_CPU, f"CPU {partner} never reached round {r} of the SIGP test")
            return False
        jitter = machine.rng.randint(0, machine.settings.sigp_jitter_us) if machine.settings.sigp_jitter_us else 0
        yield Compute(LOOP_BODY_NS + jitter * 1_000, "the test's loop body")
        cc, status = yield from sigp_retry(SIGP_START, partner)
        if cc != 0:
            out.fail(STUCK_CPU, f"SIGP START from CPU {me} to CPU {partner}: cc {cc} status {status:#x}")
            return False
    return True


def program_at(machine: Machine, cpu_index: int, psw_addr: int) -> GuestProgram | None:
    """The program at a PSW address: the IPL entry, or the restart handler."""
    if psw_addr == IPL_PSW_ADDR:
        return boot_program(machine)
    if psw_addr == RESTART_PSW_ADDR:
        return secondary_program(machine, cpu_index)
    return None
