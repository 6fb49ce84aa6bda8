"""`run --log FILE --log-format qemu-trace`: the model's BQL and vCPU events as QEMU's `log` trace backend
writes them with `-msg timestamp=on` (QEMU up to 10.0): `TID@SECONDS.MICROSECONDS:event args`, so that a
model run and a real trace go through the same `analyze` path.

What QEMU would write, from the model's events (formats from util/trace-events and accel/kvm/trace-events):
- BQL take/drop -> `qemu_mutex_lock` "waiting on mutex", `qemu_mutex_locked` "taken mutex", `qemu_mutex_unlock`
  "released mutex", with the file of the function that takes it (the model knows functions, not lines: the
  line is 0).
- A condition wait -> `released` at the wait, then `taken` when the BQL is back, with no `waiting on` between:
  QEMU's qemu_cond_wait relocks inside pthread_cond_wait (util/qemu-thread-posix.c).
- `kvm_cpu_exec` (no argument), `kvm_vcpu_ioctl` with KVM_RUN, `kvm_run_exit` with the exit reason's number,
  `kvm_io_window_exit` for a KVM_RUN cut short by a signal (accel/kvm/kvm-all.c traces no kvm_run_exit then).
Guest time is the timestamp; each model thread has its own TID (main, then vCPU n). Departure: a spin the
engine fast-forwards is written as one `kvm_cpu_exec` per millisecond of guest time, not one per turn.
"""

from __future__ import annotations

import heapq
from typing import Any, TextIO

from .events import TraceFilter

TID_MAIN = 4000  # vCPU n is TID_MAIN + 1 + n
TID_RCU = 3999  # the call_rcu thread (QEMU starts it before the vCPUs)
BQL_ADDRESS = "0x55d5c4a1e5c0"
KVM_RUN = 0xAE80  # linux/kvm.h: _IO(KVMIO, 0x80)
KVM_EXIT_REASONS = {"PAPR_HCALL": 19}  # linux/kvm.h KVM_EXIT_PAPR_HCALL
SPIN_SAMPLE_NS = 1_000_000

# The upstream file of each function the model names as a BQL site (QEMU master paths).
SITE_FILES = {
    "qemu_init": "system/vl.c", "main_loop_wait": "util/main-loop.c", "qemu_wait_io_event": "system/cpus.c",
    "qemu_process_cpu_events": "system/cpus.c",
    "pause_all_vcpus": "system/cpus.c", "kvm_vcpu_thread_fn": "accel/kvm/kvm-accel-ops.c",
    "kvm_cpu_exec": "accel/kvm/kvm-all.c", "kvm_arch_handle_exit": "target/ppc/kvm.c",
    "call_rcu_thread": "util/rcu.c", "drain_call_rcu": "util/rcu.c",
    "mttcg_cpu_thread_fn": "accel/tcg/tcg-accel-ops-mttcg.c", "cpu_exec": "accel/tcg/cpu-exec.c",
    "cpu_handle_interrupt": "accel/tcg/cpu-exec.c", "run_on_cpu": "cpus-common.c",
}


# Functions every target has under the same name, in another file (target/<arch>/).
TARGET_SITE_FILES = {"s390-ccw-virtio": {"kvm_arch_handle_exit": "target/s390x/kvm/kvm.c"}}


def site_file(site: str, machine: str = "pseries") -> str:
    function = site.split("(")[0].strip()
    return TARGET_SITE_FILES.get(machine, {}).get(function) or SITE_FILES.get(function, "system/cpus.c")


class QemuTraceLog:
    """A tracer for `Machine` with EventLog's interface, writing QEMU trace lines."""

    def __init__(self, stream: TextIO, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self._stream = stream
        self._filter = TraceFilter(patterns)
        self._spinning: list[tuple[int, int]] = []  # heap of (next sample time, tid)
        self._spinners: set[int] = set()
        self._cond_site: dict[int, str] = {}  # tid -> site of its condition wait
        self._machine = "pseries"  # from run_start: where the target's functions live
        self._relock: dict[int, str] = {}  # tid -> the same, once woken: the BQL comes back inside the wait
        self.lines = 0
        self.last_t_ns = 0
        self.closed = False

    def _write(self, t_ns: int, tid: int, name: str, args: str = "") -> None:
        if self._filter(name):
            self._stream.write(f"{tid}@{t_ns // 1_000_000_000}.{t_ns // 1000 % 1_000_000:06d}:{name} {args}\n")
            self.lines += 1

    def _catch_up(self, t_ns: int) -> None:
        """The sampled turns of fast-forwarded spins, up to (not including) t_ns, in time order."""
        while self._spinning and self._spinning[0][0] < t_ns:
            due, tid = heapq.heappop(self._spinning)
            if tid in self._spinners:
                self._write(due, tid, "kvm_cpu_exec")
                heapq.heappush(self._spinning, (due + SPIN_SAMPLE_NS, tid))

    def __call__(self, event: str, t_ns: int, fields: dict[str, Any]) -> None:
        self.last_t_ns = max(self.last_t_ns, t_ns)
        if self.closed:
            return
        if event == "run_start" and isinstance(fields.get("settings"), dict):
            self._machine = str(fields["settings"].get("machine", "pseries"))
        cpu = fields.get("cpu")
        if fields.get("thread") == "call_rcu":
            tid = TID_RCU
        elif cpu == "main":
            tid = TID_MAIN
        elif isinstance(cpu, int) and not isinstance(cpu, bool):
            tid = TID_MAIN + 1 + cpu
        else:
            return
        self._catch_up(t_ns)
        site = str(fields.get("site") or "")
        mutex = f"mutex {BQL_ADDRESS} (../{site_file(site, self._machine)}:0)"
        if event == "qemu_mutex_lock":
            if tid not in self._relock:
                self._write(t_ns, tid, event, f"waiting on {mutex}")
        elif event == "qemu_mutex_locked":
            site = self._relock.pop(tid, site)
            self._write(t_ns, tid, event, f"taken mutex {BQL_ADDRESS} (../{site_file(site, self._machine)}:0)")
        elif event == "qemu_mutex_unlock":
            self._write(t_ns, tid, event, f"released {mutex}")
        elif event == "qemu_cond_wait":  # the model logged the BQL's release just before
            self._cond_site[tid] = site
        elif event == "qemu_cond_woken":
            self._relock[tid] = self._cond_site.pop(tid, "")
        elif event == "kvm_cpu_exec":
            self._write(t_ns, tid, event)
        elif event == "kvm_vcpu_ioctl_run":
            self._write(t_ns, tid, "kvm_vcpu_ioctl", f"cpu_index {cpu}, type {KVM_RUN:#x}, arg (nil)")
        elif event == "kvm_run_exit":
            reason = fields.get("reason")
            if reason == "EINTR":
                self._write(t_ns, tid, "kvm_io_window_exit")
            else:
                self._write(t_ns, tid, event, f"cpu_index {cpu}, reason {KVM_EXIT_REASONS.get(str(reason), 0)}")
        elif event == "vcpu_spin_fast_forward":
            self._spinners.add(tid)
            heapq.heappush(self._spinning, (t_ns + SPIN_SAMPLE_NS, tid))
        elif event == "vcpu_spin_resumed":
            self._spinners.discard(tid)

    def end(self, t_ns: int, fields: dict[str, Any]) -> None:
        """Write the sampled spin up to the end; QEMU's log has no last line of its own."""
        if self.closed:
            return
        self._catch_up(t_ns + 1)
        self.closed = True
        self._stream.flush()
