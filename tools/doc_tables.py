"""The verdict tables of the scenario pages: the words are written here, every verdict is the model's.

A table is rows of cells; a cell is a sequence of parts, each a string (Markdown, as it is written) or a
`V(...)`: a variant of the page's scenario (the keys of `--set`), which becomes the verdict the model gives
for it, in backticks. A `V` of several variants (`V(...) | V(...)`, e.g. POWER10 and POWER9) must give one
verdict, or the generator stops and says which differ. tools/docgen.py writes each table between its
markers, and tests/test_docs.py runs the generator again (every cell is a run of a few tens of
milliseconds), so a hand-edited verdict, or a model that now answers otherwise, fails the docs test.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class V:
    """The verdict of the page's scenario with these settings (each variant of `alternatives` alike)."""
    alternatives: tuple[tuple[tuple[str, Any], ...], ...]

    def __init__(self, **variant: Any) -> None:
        object.__setattr__(self, "alternatives", (_key(variant),))

    def __or__(self, other: V) -> V:
        both = V()
        object.__setattr__(both, "alternatives", self.alternatives + other.alternatives)
        return both


def _key(variant: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(tuple(x) for x in v) if k == "monitor" else v) for k, v in variant.items())


@functools.cache
def model_verdict(scenario: str, variant: tuple[tuple[str, Any], ...]) -> str:
    """What the model gives for the scenario with the variant's settings (the Trio engine, its seed)."""
    from vcpu_sched import runner
    from vcpu_sched.scenario import apply, load

    values = {k: [list(x) for x in v] if k == "monitor" else v for k, v in variant}
    return runner.run(apply(load(scenario).settings, values, f"docs table of {scenario}")).verdict


def verdict(scenario: str, v: V) -> str:
    found = {alt: model_verdict(scenario, alt) for alt in v.alternatives}
    if len(set(found.values())) != 1:
        raise ValueError(f"{scenario}: one cell, several verdicts: "
                         + "; ".join(f"{dict(alt)} -> {verdict}" for alt, verdict in found.items()))
    return next(iter(found.values()))


Cell = Sequence["str | V"]


def cell(scenario: str, parts: Cell) -> str:
    return "".join(f"`{verdict(scenario, p)}`" if isinstance(p, V) else p for p in parts)


def table(scenario: str, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(scenario, c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- each scenario page's first table: what the guest does, as in the file, and with the fix

SUMMARY_HEADER = ("what the guest does", "as in the file", "`fix=quiesced` (or the fix named)")
SUMMARIES: dict[str, tuple[Cell, Cell, Cell]] = {
    "spapr-rtas-stopped": (["the seed's KVM boot, 32 vCPUs on POWER10"], [V()], [V(fix="quiesced")]),
    "spapr-cpu-offline-online": (
        ["boot, then offline every secondary (stop-self, polled with query-cpu-stopped-state), H_SET_MODE "
         "while they are stopped, online them again (start-cpu), twice"],
        [V(), " (already at boot)"], [V(fix="quiesced")]),
    "spapr-system-reset": (["boot, monitor `system_reset`, boot again"], [V(), " (first boot)"],
                           [V(fix="quiesced")]),
    "spapr-migrate": (
        ["TCG boot, savevm + loadvm, then an IPI to every secondary"],
        [V(), " (", V(fix="quiesced"), " with the seed's fix alone; ", V(fix="quiesced+migration"),
         " with `quiesced+migration`)"],
        [V(fix="quiesced")]),
    "spapr-migrate-from-9.2": (
        ["TCG boot with 2 of 4 CPUs, savevm + loadvm without the cpu/rtas_stopped subsection "
         "(`rtas_stopped_state = false`), then online CPUs 2 and 3"],
        ["(`fix = quiesced+migration`, as in the file) ", V(), "; ", V(accel="kvm"), " under KVM"],
        ["(`rtas_stopped_state = true`) ", V(rtas_stopped_state=True)]),
    "powernv-core-stop-start": (
        ["TCG powernv10: firmware stops thread 1 through the core direct controls, the monitor types `stop` / "
         "`cont`, a doorbell arrives, the firmware starts the thread again"],
        [V()], [V(fix="quiesced")]),
    "spapr-fwnmi-kdump": (
        ["KVM boot with the seed's fix, then CPU 1 crashes into a kdump kernel that calls RTAS "
         "`ibm,nmi-register` (`fwnmi_fix = false`: before upstream aef92d87c5)"],
        [V(), " (after the kdump kernel's NODE_DATA line)"], ["(`fwnmi_fix = true`) ", V(fwnmi_fix=True)]),
    "spapr-hotplug": (
        ["KVM boot of 2 of 4 possible CPUs (`-smp 2,maxcpus=4`) with the seed's fix, then the monitor's "
         "`device_add host-spapr-cpu-core,core-id=2` and the guest onlines the new CPU (start-cpu)"],
        [V()], ["(`fix = none`: the boot's own ", V(fix="none"), ")"]),
    "spapr-hotplug-kdump": (
        ["KVM boot of 2 of 4 possible CPUs with the seed's fix, `device_add` of a core, then a crash into a "
         "kdump kernel (`maxcpus=4`) before the guest starts the new CPU (`sysreset_fix`: upstream a1c2dfee4f)"],
        [V()],
        ["(`sysreset_fix = false`) ", V(sysreset_fix=False), ": the crashed kernel's other CPU stays in the "
         "hold loop the reset CPU saved over, then start-cpu refuses the reset CPU"]),
    "spapr-nmi-kdump": (
        ["KVM boot of 2 of 4 CPUs (Linux `maxcpus=2`) with the seed's fix and a1c2dfee4f, then the monitor's "
         "`nmi` (QMP `inject-nmi`, `virsh inject-nmi`) and a kdump kernel with `maxcpus=4`"],
        [V(), " (then `start-cpu failed: -1` for CPUs 2, 3): a finding, spapr_nmi still resets quiesced CPUs"],
        ["(`nmi_fix = true`, a what-if) ", V(nmi_fix=True)]),
    "s390x-sigp-cross": (
        ["s390-ccw-virtio KVM: SIGP SET PREFIX + RESTART bring CPU 1 up, then CPU 0 and CPU 1 meet at a "
         "barrier and SIGP START each other, 3 rounds (`sigp_lock = false`: before upstream f9530c3242)"],
        [V(), " (cross run_on_cpu deadlock)"], ["(`sigp_lock = true`) ", V(sigp_lock=True)]),
    "tcg-rcu-device-add": (
        ["pseries TCG boot, then CPU 0 busy-loops in guest code for 10 s and the monitor types `device_add` "
         "(`force_rcu = false`: before ef149763a8 + dd47a8f654)"],
        [V(), " (main loop in `drain_call_rcu`)"], ["(`force_rcu = true`) ", V(force_rcu=True)]),
}


def summary(name: str) -> str:
    return table(name, SUMMARY_HEADER, [SUMMARIES[name]])


# ---- spapr-hotplug-kdump: the two kdump loaders

TCG_CORE = [["dlpar: waiting", "device_add power10_v2.0-spapr-cpu-core,core-id=2"]]
THIRD_CORE = [["dlpar: waiting", "device_add host-spapr-cpu-core,core-id=3"]]
FILE = {"kexec_syscall": "kexec_file_load"}
NOFIX = {"sysreset_fix": False}
OFFLINED = {"workload": "offline-kdump"}
THREE = {"smp": 3, "kdump_cpus": 2, "monitor": THIRD_CORE}

KDUMP_LOADERS: list[tuple[Cell, Cell, Cell]] = [
    (["with a1c2dfee4f (KVM or TCG)"],
     [V() | V(accel="tcg", monitor=TCG_CORE), ": the hotplugged CPU is quiesced, left out of the reset, and "
      "started with start-cpu: 3 CPUs"],
     [V(**FILE) | V(**FILE, accel="tcg", monitor=TCG_CORE)]),
    (["without it (KVM, TCG, POWER9), crash on CPU 0"],
     [V(**NOFIX) | V(**NOFIX, accel="tcg", monitor=TCG_CORE) | V(**NOFIX, cpu="POWER9"),
      ": tree 0, 1, 2; \"Processor 1 is stuck.\" (CPU 1, the crashed kernel's own, kept in the hold loop the "
      "reset CPU 2 saved over), then \"start-cpu failed: -1\", \"smp: failed starting cpu 2 (rc -2)\""],
     [V(**NOFIX, **FILE), ": tree 1, 0, 2; \"Processor 0 is stuck.\" (CPU 1), then start-cpu fails for logical "
      "CPU 2"]),
    (["without it, crash on CPU 1"],
     [V(**NOFIX, crash_cpu=1), ": \"Processor 0 is stuck.\" (CPU 0), then start-cpu fails for CPU 2"],
     [V(**NOFIX, **FILE, crash_cpu=1), ": \"Processor 1 is stuck.\" (CPU 0), then the same"]),
    (["without it, `kdump_cpus = 1`"],
     [V(**NOFIX, kdump_cpus=1), ": the kdump kernel is logical CPU 0 and tries no other: the harm goes unseen"],
     [V(**NOFIX, **FILE, kdump_cpus=1), ": the kdump kernel is logical CPU 1 and tries logical 0, CPU 1: "
      "\"Processor 0 is stuck.\""]),
    (["CPUs offlined with stop-self, then the crash, without it"],
     [V(**OFFLINED, **NOFIX), ": a finding: an offlined CPU is quiesced and reset too; it has a paca, so it "
      "reaches the hold loop (nothing overwrote it), but start-cpu refuses it"],
     [V(**OFFLINED, **NOFIX, **FILE), ": the same, as logical CPU 0"]),
    (["the same with a1c2dfee4f"],
     [V(**OFFLINED), ": the check is on `quiesced`, however the CPU got there"], [V(**OFFLINED, **FILE)]),
    (["`fix = none`"], [V(fix="none"), ": the seed's hang at boot, before any hotplug"],
     [V(fix="none", **FILE)]),
    (["`fix = none`, `timebase_reset = reverted`, a 2-thread core"],
     [V(fix="none", timebase_reset="reverted", cores=1, threads=2), ": query-cpu-stopped-state from `halted` "
      "(before fb802acdc8): \"Processor 1 is stuck.\" (the crashed kernel's other thread), \"Processor 2 is "
      "stuck.\", \"Processor 3 is stuck.\" (the hotplugged threads, reported running)"],
     [V(fix="none", timebase_reset="reverted", cores=1, threads=2, **FILE),
      ": the same (one core before the other either way)"]),
    (["3 CPUs, `kdump_cpus = 2`, without it"],
     [V(**THREE, **NOFIX, crash_cpu=2), " with the crash on CPU 2: \"Processor 0 is stuck.\", 5 s later "
      "\"Processor 1 is stuck.\""],
     [V(**THREE, **NOFIX, **FILE, crash_cpu=0), " with the crash on CPU 0 (tree 2, 1, 0, 3): the same two "
      "lines, for CPUs 2 and 1"]),
    (["the same with a1c2dfee4f"],
     [V(**THREE, crash_cpu=2)],
     [V(**THREE, **FILE, crash_cpu=0), ": no reset CPU, an intact hold loop, 3 CPUs"]),
]


def kdump_loaders() -> str:
    return table("spapr-hotplug-kdump", ("variant", "`kexec_load` (default)", "`kexec_file_load`"), KDUMP_LOADERS)


# ---- spapr-migrate-from-9.2: what 628bda1ab7's inference does to each guest

OFFLINE = {"boot_cpus": 0, "workload": "offline-online", "monitor": [["secondary CPUs offline", "migrate"]],
           "offline_hold_ns": 100_000_000}
SMT_OFF = {"boot_cpus": 0, "cores": 2, "threads": 2, "workload": "smt-off-on",
           "monitor": [["SMT threads offline", "migrate"]], "offline_hold_ns": 100_000_000}
OFFLINE_KDUMP = {**OFFLINE, "workload": "offline-kdump"}
KVM = {"accel": "kvm"}
P9 = {"cpu": "POWER9"}

INFERENCE: list[tuple[Cell, Cell, Cell, Cell, Cell]] = [
    (["CPUs 2, 3 never started (maxcpus=2), then onlined"], ["TCG"], ["POWER10, POWER9"],
     ["inferred not quiesced: query-cpu-stopped-state answers NOT_STOPPED, Linux never calls start-cpu"],
     [V() | V(**P9), " (\"Processor 2 is stuck.\")"]),
    (["the same"], ["KVM"], ["POWER10, POWER9"],
     ["LPCR and PSSCR come from KVM (wake-up bits, no EC): not quiesced, the DEC the destination's own reset "
      "raised (the stream carries no pending interrupts) is deliverable, `cpu_post_load`'s `hreg_store_msr` "
      "sets HARD: the seed's hang"],
     [V(**KVM) | V(**KVM, **P9)]),
    (["the same"], ["KVM"], ["POWER8"], ["no PSSCR, other wake-up rules (not investigated further)"],
     [V(**KVM, cpu="POWER8")]),
    (["CPUs 1-3 offlined with stop-self, migrated while offline, then onlined"], ["TCG"], ["POWER10"],
     ["stop-self set EC and cleared the PM bits: not quiesced, start-cpu never called"], [V(**OFFLINE)]),
    (["the same"], ["KVM"], ["POWER10"], ["as for never-started CPUs"], [V(**OFFLINE, **KVM)]),
    (["SMT threads turned off (`ppc64_cpu --smt=off`, 2 threads a core), migrated, `--smt=on`"], ["TCG"],
     ["POWER10, POWER9"], ["the threads went offline with stop-self: as any offlined CPU"],
     [V(**SMT_OFF) | V(**SMT_OFF, **P9)]),
    (["the same"], ["KVM"], ["POWER10, POWER9"],
     ["the threads' LPCR is their core's (KVM's vcore keeps the exit bits), PSSCR without EC: not quiesced, "
      "HARD at the load"],
     [V(**SMT_OFF, **KVM) | V(**SMT_OFF, **KVM, **P9)]),
    (["CPUs 2, 3 never started, migrated, then CPU 1 crashes into a kdump kernel (`maxcpus=1`)"], ["TCG"],
     ["POWER10, POWER9"],
     ["the kdump kernel's H_SET_MODE calls run `do_lpcr_sync` on them, but their LPCR exit bits are clear in "
      "QEMU's copy: HARD stays clear. The crash's system reset does reach them (inferred not quiesced, so "
      "a1c2dfee4f does not skip them); never started, they save over kexec's hold loop, and the kdump kernel "
      "still tries CPU 0 (`cpuhp_bringup_mask`)"],
     [V(workload="kdump", crash_cpu=1) | V(workload="kdump", crash_cpu=1, **P9),
      " (\"Processor 0 is stuck.\", as on a real QEMU)"]),
    (["the same"], ["KVM"], ["POWER10"], ["the guest never gets to its kexec: the hang at the load"],
     [V(workload="kdump", crash_cpu=1, **KVM)]),
    (["the same, with the seed's fix alone (`fix = quiesced`)"], ["TCG"], ["POWER10"],
     ["nothing inferred, but the running CPUs lose their interrupts at the load (spapr-migrate's bug): the "
      "crash request sent to one of them is never taken, and the run ends at its deadline"],
     [V(workload="kdump", crash_cpu=1, fix="quiesced")]),
    (["CPUs 1-3 offlined with stop-self, migrated, then a crash into a kdump kernel"], ["TCG"], ["POWER10"],
     ["stop-self cleared the exit bits in QEMU's LPCR: nothing deliverable when the kdump kernel's H_SET_MODE "
      "syncs them; an offlined CPU has a paca, so its reset saves over nothing"],
     [V(**OFFLINE_KDUMP)]),
    (["either, with the subsection (`rtas_stopped_state = true`)"], ["TCG, KVM"], [""], ["`quiesced` travels"],
     [V(rtas_stopped_state=True) | V(rtas_stopped_state=True, **KVM)]),
    (["the same, without 628bda1ab7 (`fix = quiesced`)"], ["TCG"], [""],
     ["nothing inferred: the destination's reset left them quiesced"], [V(fix="quiesced")]),
]


def inference() -> str:
    return table("spapr-migrate-from-9.2", ("guest before the migration", "accel", "cpu", "after the load",
                                            "verdict"), INFERENCE)


# ---- real-qemu.md: the runs that settle the model's findings, the model's side at the binary's release

def _at_11_1(scenario: str, **variant: Any) -> tuple[str, V]:
    from vcpu_sched.versions import profile

    return scenario, V(**{**profile("11.1"), **variant})


# (the run, the real verdict and its evidence as tests/test_real_qemu.py checks them, the model's cell)
REAL_SAID: list[tuple[str, str, str, tuple[tuple[str, V], str]]] = [
    ("`spapr-migrate-from-9.2` (`-M pseries-10.0`, guest `maxcpus=2`, migrate, online CPUs 2, 3)", "`stuck-cpu`",
     "query-cpu-stopped-state(2) answers 2 (not stopped), no start-cpu, \"Processor 2 is stuck.\" 100 s later",
     (_at_11_1("spapr-migrate-from-9.2"), "")),
    ("the same with `rtas_stopped_state = true` (`-M pseries`)", "`completed`",
     "query answers 0, start-cpu 0, 4 CPUs online",
     (_at_11_1("spapr-migrate-from-9.2", rtas_stopped_state=True), "")),
    ("the same with no migration (`monitor = []`)", "`completed`", "4 CPUs online",
     (_at_11_1("spapr-migrate-from-9.2", monitor=[]), "")),
    ("`spapr-nmi-kdump --set accel=tcg` (`maxcpus=2` of 4, kdump kernel `maxcpus=4`, QMP `inject-nmi`)",
     "`stuck-cpu`", "\"Processor 1 is stuck.\", then \"start-cpu failed: -1\" for CPUs 2 and 3",
     (_at_11_1("spapr-nmi-kdump", accel="tcg"), " (the comparison changed it from `bad-rtas-answer`: see "
      "[spapr-nmi-kdump](scenarios/spapr-nmi-kdump.md))")),
]


def real_said() -> str:
    lines = ["| run | real verdict | evidence | model at 11.1 |", "| --- | --- | --- | --- |"]
    for run, real, evidence, ((scenario, v), note) in REAL_SAID:
        lines.append(f"| {run} | {real} | {evidence} | `{verdict(scenario, v)}`{note} |")
    return "\n".join(lines)


# ---- spapr-nmi-kdump: the other unguarded system resets

WATCHDOG = {"workload": "watchdog-dump", "monitor": [], "deadline_s": 120.0}  # the watchdog fires at 60 s
SYSRESET = {"workload": "sysreset-kdump", "crash_cpu": 0}

OTHER_RESETS: list[tuple[Cell, Cell, Cell]] = [
    (["`workload = \"watchdog-dump\"`, `monitor = []`, `deadline_s = 120.0`"],
     [V(**WATCHDOG) | V(**WATCHDOG, accel="tcg")],
     ["Linux's pseries-wdt loaded with `action=2` arms H_WATCHDOG for dump and restart (its default 60 s); "
      "nobody feeds it, and at 61.86 s every CPU is reset: \"Processor 1 is stuck.\", then start-cpu of CPUs 2 "
      "and 3 fails (-1). The same under TCG"]),
    (["the same, `nmi_fix = true`"], [V(**WATCHDOG, nmi_fix=True)], ["4 CPUs"]),
    (["the same, `kdump_cpus = 1`, `boot_cpus = 1`"], [V(**WATCHDOG, kdump_cpus=1, boot_cpus=1)],
     ["the reset CPUs go unseen"]),
    (["`workload = \"sysreset-kdump\"`, `crash_cpu = 0`"], [V(**SYSRESET) | V(**SYSRESET, accel="tcg")],
     ["one H_SIGNAL_SYS_RESET names the stopped CPU 2. The later crash's broadcast skips CPUs 2 and 3 "
      "(a1c2dfee4f), but CPU 2 is already reset: \"Processor 1 is stuck.\" (the hold loop it saved over), "
      "\"start-cpu failed: -1\" for CPU 2; CPU 3 comes up. The same under TCG"]),
    (["the same, `nmi_fix = true`"], [V(**SYSRESET, nmi_fix=True)], ["4 CPUs"]),
    (["the same, `kdump_cpus = 1`"], [V(**SYSRESET, kdump_cpus=1)], ["unseen"]),
]


def other_resets() -> str:
    return table("spapr-nmi-kdump", ("variant", "verdict", "what happens"), OTHER_RESETS)


# ---- switches.md: the LPCR-sync what-if on the seed's guest (KVM)

LPCR_SYNC: list[tuple[Cell, Cell, Cell]] = [
    (["`lpcr-sync`"], [V(fix="lpcr-sync"), ", before the guest prints a line"],
     ["a secondary never loses its wake-up bits; at reset it is halted with PSSCR[EC] set (spapr still sets "
      "it), LPCR[DEE] kept and the reset's DEC pending, so `ppc_maybe_interrupt` sets HARD there and its thread "
      "loops with the BQL before CPU 0 starts"]),
    (["`quiesced+lpcr-sync`"], [V(fix="quiesced+lpcr-sync")],
     ["`quiesced` masks every interrupt of an RTAS-stopped CPU whatever its LPCR holds"]),
]


def lpcr_sync() -> str:
    return table("spapr-rtas-stopped", ("fix", "KVM verdict", "why"), LPCR_SYNC)
