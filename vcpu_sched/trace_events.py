"""Every event the model and the engines log, declared once, as QEMU declares its `trace-events` files.

Each event has a name (QEMU's trace-event name where one exists), the fields it may carry besides
`event` and `t_ns` (guest nanoseconds), and a one-line meaning. The event log refuses an undeclared event
or field (a ModelError, so a test that logs finds it); `analyze` reads events by these names; the
docs/events.md's schema table is `schema_table()`, and a test keeps the two the same.
"""

from __future__ import annotations

from typing import NamedTuple


class Event(NamedTuple):
    name: str
    fields: frozenset[str]
    meaning: str


def _declare(*specs: tuple[str, str, str]) -> dict[str, Event]:
    return {name: Event(name, frozenset(fields.split()), meaning) for name, fields, meaning in specs}


EVENTS = _declare(
    # the run
    ("run_start", "settings", "first line: every RunSettings field, the seed among them"),
    ("run_verdict", "verdict reason", "the engine reached its verdict"),
    ("run_end", "verdict reason cpus_online guest_time_s lockup steps",
     "last line: the verdict (null when cut short: Ctrl-C, SIGTERM) and the watchdog's report"),
    ("watchdog_fired", "stuck holder held_for_s iterations holder_thread", "the lockup detector fired"),
    ("trace_suppressed", "cpu suppressed_event count rate_per_s window_start_ns window_ns",
     "lines of one (event, cpu) over the flood limit in one guest second, counted"),
    # the engines: the BQL and conditions (util/qemu-thread-posix.c)
    ("qemu_mutex_lock", "cpu thread site owner", "a thread is about to take the BQL; owner: who holds it"),
    ("qemu_mutex_locked", "cpu thread site waited_ns", "a thread took the BQL, after waiting waited_ns"),
    ("qemu_mutex_unlock", "cpu thread site held_ns", "a thread let go of the BQL it held for held_ns"),
    ("qemu_cond_wait", "cpu thread cond site", "a thread sleeps on a condition, the BQL dropped"),
    ("qemu_cond_woken", "cpu thread cond", "a thread woke from a condition (it takes the BQL next)"),
    ("qemu_event_wait", "cpu thread what site",
     "a thread waits, inside QEMU, for something other than the BQL (a QemuEvent, a kernel vCPU mutex)"),
    ("qemu_event_woken", "cpu thread what", "that wait ended"),
    ("vcpu_spin_fast_forward", "cpu thread iterations",
     "a loop turn with the BQL held changed nothing: identical turns are skipped from here"),
    ("vcpu_spin_resumed", "cpu thread skipped_iterations", "a fast-forwarded spin ended; turns it made"),
    # generic vCPU scheduling (system/cpus.c, cpu-common.c)
    ("qemu_cpu_kick", "cpu by", "a vCPU thread is kicked (halt_cond broadcast, SIG_IPI)"),
    ("run_on_cpu", "cpu work caller", "a thread queues work on a vCPU and waits for it"),
    ("process_queued_cpu_work", "cpu work", "a vCPU thread runs a queued work item"),
    ("qemu_wait_io_event_sleep", "cpu halted", "a vCPU thread goes to sleep in qemu_wait_io_event"),
    ("qemu_wait_io_event_wake", "cpu", "a vCPU thread woke in qemu_wait_io_event"),
    ("qemu_process_cpu_events_sleep", "cpu halted", "the same, QEMU 10.2's name (qemu_version = 10.2)"),
    ("qemu_process_cpu_events_wake", "cpu", "the same, QEMU 10.2's name (qemu_version = 10.2)"),
    ("qemu_cond_signal", "cpu cond woke",
     "a vCPU signals a condition (qemu_cond_signal): `woke` is the one waiter it wakes, null when none waits"),
    ("pause_all_vcpus", "thread", "a thread asks every vCPU to stop and waits until all have"),
    ("pause_all_vcpus_done", "thread", "pause_all_vcpus returned: its caller believes no vCPU runs"),
    ("resume_all_vcpus", "thread", "a thread lets every vCPU run again"),
    ("start_exclusive", "cpu running",
     "a vCPU thread starts an exclusive section: `running` other vCPUs must leave guest code first"),
    ("exclusive_started", "cpu", "the exclusive section runs: no other vCPU executes until it ends"),
    ("end_exclusive", "cpu", "the exclusive section ended (exclusive_resume broadcast)"),
    ("cpu_list_add", "cpu thread finish_safe_work",
     "a new CPU joins the CPU list; finish_safe_work: it then waits out an exclusive section (before e533f45d7d)"),
    ("spapr_cpu_reset", "cpu halted", "2018's reset of a hotplugged vCPU (hotplug_compat_fix = false): halted is 0"),
    ("cpu_stop_current", "cpu stopped", "a vCPU asks to stop itself (a guest's reset or shutdown request)"),
    ("invariant_violated", "invariant text", "a safety invariant of the machine broke: the run ends"),
    ("vm_stopped", "state by", "the VM stopped: its run state is `state` (do_vm_stop)"),
    # migration (migration/migration.c)
    ("migration_thread_start", "uri", "the migration thread starts"),
    ("migration_global_state", "runstate", "global_state_store: the run state the destination restores"),
    ("migration_completed", "destination",
     "the source stopped and sent its state; `destination`: the run state the destination restores"),
    # accelerators
    ("kvm_vcpu_thread_start", "cpu thread", "a KVM vCPU thread starts"),
    ("tcg_vcpu_thread_start", "cpu thread", "a TCG vCPU thread starts"),
    ("kvm_cpu_exec", "cpu ret bql_dropped", "a turn enters kvm_cpu_exec; ret EXCP_HLT: the halted short-cut"),
    ("kvm_vcpu_ioctl_run", "cpu", "ioctl(KVM_RUN) entered"),
    ("kvm_run_exit", "cpu reason hcall", "KVM_RUN returned: PAPR_HCALL (with the hcall) or EINTR"),
    ("cpu_post_load_infer_quiesced", "cpu halted psscr_ec lpcr_pm quiesced",
     "628bda1ab7's inference of quiesced for a stream without the cpu/rtas_stopped subsection"),
    ("kvm_vcpu_mutex_wait", "cpu target ioctl",
     "a vCPU ioctl from CPU `cpu`'s thread waits for CPU `target`'s kernel vCPU mutex (KVM_RUN holds it)"),
    ("kvm_vcpu_enable_cap", "cpu target cap", "KVM_ENABLE_CAP done on CPU `target`'s vCPU"),
    ("kvm_h_cede", "cpu", "the guest ceded inside KVM (idle in the kernel)"),
    ("kvm_get_registers", "cpu via lpcr_before lpcr lpcr_decoded psscr_ec_before psscr_ec",
     "register get: the kernel's LPCR and PSSCR overwrite QEMU's; via: the run_on_cpu work it ran in"),
    ("kvm_put_registers", "cpu level lpcr_wanted lpcr_before lpcr ignored psscr_ec_wanted psscr_ec",
     "register put: what QEMU asked for, what the kernel kept"),
    # target/ppc and the pseries machine
    ("ppc_maybe_interrupt", "cpu interrupt rule hard_before hard halted quiesced",
     "CPU_INTERRUPT_HARD recomputed from ppc_next_unmasked_interrupt"),
    ("ppc_store_lpcr", "cpu lpcr_before lpcr decoded", "QEMU's LPCR written"),
    ("ppc_cpu_reset", "cpu msr lpcr psscr", "ppc_cpu_reset_hold: the SPRs back to their defaults"),
    ("ppc_set_irq", "cpu irq level", "a pending interrupt bit set or cleared"),
    ("ppc_cpu_do_interrupt", "cpu interrupt as_sreset", "a TCG vCPU takes an interrupt"),
    ("cpu_ppc_tb_reset", "cpu dec_pending timebase_reset", "timebase reset: is a DEC left pending"),
    ("cpu_post_load", "cpu halted quiesced dec_pending",
     "a vCPU's state loaded from a migration stream (DEC: the destination reset's, re-armed by TCG since 8.2)"),
    ("spapr_reset_vcpu", "cpu halted quiesced", "spapr's per-vCPU reset"),
    ("spapr_cpu_set_entry_state", "cpu nip quiesced", "a vCPU's entry state set (reset, start-cpu)"),
    ("spapr_do_system_reset_on_cpu", "cpu nip quiesced by",
     "a vCPU took a system reset (halted cleared, quiesced kept), `by` H_SIGNAL_SYS_RESET, its unicast branch, "
     "spapr_nmi or spapr_watchdog"),
    ("spapr_core_plug", "cpu core_id", "device_add of a CPU core: the new vCPU, its thread started"),
    ("spapr_set_all_lpcrs", "value mask why caller", "an LPCR change for every vCPU, through run_on_cpu"),
    ("spapr_hypercall", "cpu hcall args", "an hcall handled in QEMU"),
    ("spapr_cas_pvr", "cpu cur_pvr new_pvr", "CAS: the compatibility PVR in force and the one negotiated"),
    ("rtas_call", "cpu call args", "an RTAS call"),
    ("rtas_return", "cpu call rets", "an RTAS call's answer"),
    ("pnv_xscom_read", "core reg value", "powernv: a core register read"),
    ("pnv_xscom_write", "core reg value", "powernv: a core register written"),
    # RCU (util/rcu.c)
    ("rcu_read_lock", "thread ctr", "a thread enters an RCU read-side critical section (ctr: the grace period)"),
    ("rcu_read_unlock", "thread", "a thread leaves its RCU read-side critical section"),
    ("rcu_wait_for_readers", "readers gp_ctr forced",
     "synchronize_rcu waits for these readers; forced: their force_rcu notifiers were called"),
    ("rcu_callback", "name", "the call_rcu thread runs a callback after its grace period"),
    ("monitor_error", "command error", "a monitor command failed with this error"),
    # target/s390x
    ("cpu_set_state", "cpu state", "s390x: a CPU's architected state (STOPPED, OPERATING) set"),
    ("sigp_handle", "cpu order dst", "s390x: QEMU handles a SIGP order from CPU `cpu` to CPU `dst`"),
    ("sigp_busy", "cpu order dst holder", "s390x: the SIGP lock is taken (by `holder`): condition code 2"),
    ("sigp_finished", "cpu order dst cc", "s390x: a SIGP's condition code"),
    # target/i386
    ("kvm_apic_accept_events", "cpu vector", "x86: an AP leaves wait-for-SIPI at its SIPI vector (in the kernel)"),
    ("synic_update", "cpu enabled msg_page evt_page", "x86: a vCPU's SynIC follows its MSRs (async_synic_update)"),
    ("acpi_cpu_plug_cb", "cpu", "x86: a hot-added CPU is reported to the guest (ACPI CPU hotplug event)"),
    ("qemu_system_shutdown_request", "cause", "the machine is asked to shut down"),
    # the machine and the guest
    ("qemu_system_reset", "", "machine reset"),
    ("vm_start", "", "the VM runs (vm_start)"),
    ("monitor_pattern_seen", "command due_ns", "a monitor command's console pattern showed: it comes at `due_ns`"),
    ("monitor_command", "command", "a monitor command typed by the scenario"),
    ("console", "cpu text", "a line on the guest console"),
    ("guest_finished", "online failures", "the guest's program ended: CPUs online, failures seen"),
)


def undeclared(event: str, fields: dict[str, object]) -> str | None:
    """Why (event, fields) is not in the catalogue, or None when it is."""
    declared = EVENTS.get(event)
    if declared is None:
        return f"event {event!r} is not declared in trace_events.py"
    extra = fields.keys() - declared.fields
    if extra:
        return f"event {event!r} has undeclared fields {sorted(extra)}"
    return None


def schema_table() -> str:
    """The table of events in docs/events.md, one row per event."""
    rows = ["| event | fields | meaning |", "| --- | --- | --- |"]
    for event in EVENTS.values():
        fields = ", ".join(f"`{f}`" for f in sorted(event.fields)) or "-"
        rows.append(f"| `{event.name}` | {fields} | {event.meaning} |")
    return "\n".join(rows)
