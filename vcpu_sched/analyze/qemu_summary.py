"""`vcpu-sched analyze` on QEMU's own trace: which mutex is the BQL, who held it, who waited, and the lockup.

Facts used (QEMU util/trace-events, util/qemu-thread-posix.c, accel/kvm/trace-events, at v7.2.0 and
master): `qemu_mutex_lock` ("waiting on mutex") is traced before pthread_mutex_lock and `qemu_mutex_locked`
("taken mutex") after it, both with the caller's file and line (`qemu_mutex_lock_iothread`/`bql_lock` pass
theirs); `qemu_mutex_unlock` ("released mutex") before unlocking. There is no condition-variable event:
`qemu_cond_wait` shows as `released` then, once woken and relocked, `taken`, with no `waiting on` between
(so a thread blocked relocking after a condition wait is not seen waiting). `kvm_vcpu_ioctl` and
`kvm_run_exit` carry the vCPU's `cpu_index`; `kvm_cpu_exec` has no argument and is traced on every turn of
the vCPU loop, also before the halted early return (EXCP_HLT) that keeps the BQL.

Two passes over the files. The first finds the BQL (the mutex most taken from the BQL's call sites: the main
loop, cpus.c and the accelerators' thread loops) by one search over large blocks of the files, not line by
line. The second reads each line once: it counts the mutex events at those sites exactly (and is made again,
with the BQL it counted, in the rare trace where the first pass's count pointed at another mutex), learns each
thread's role, and times every BQL hold and wait.

A holder is described by what it did over the whole hold, not by its last event: the hold's time is split
into waiting for other mutexes (`waiting on` to `taken`) or in qemu_cond_wait (`released`, then `taken` of the
same mutex with nothing between), silence (gaps of at least 1% of --threshold with no event of its own and no
wait) and the rest, busy; the largest share names it blocked, silent or spinning.
Every mutex's holder is followed the same way, so a wait names who held that mutex meanwhile (the last
thread to release it during the wait, or the one holding it at the end) and what that thread did while it
held it, down to CHAIN_DEPTH links; a chain back to a thread already in it, with both waits open at the
end, is a deadlock.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .bqlstats import Durations
from .qemu_trace import _CPU_INDEX, MUTEX_EVENTS, Line, TraceFiles
from .timeline import Instant, Interval, Timeline

NS = 1_000_000_000
# Where QEMU takes the BQL: the main loop, cpus.c (softmmu/ before 8.1, system/ since), the accelerators.
BQL_SITE_PARTS = ("util/main-loop.c", "softmmu/cpus.c", "system/cpus.c", "accel/")
VCPU_SITE_PARTS = ("accel/",)


@functools.lru_cache(maxsize=4096)
def _is_bql_site(site: str) -> bool:
    return any(part in site for part in BQL_SITE_PARTS)


@dataclass(slots=True)
class ThreadFacts:
    """What the reading learns about one thread's role."""

    events: int = 0
    cpu_index: int | None = None
    vcpu_site: str | None = None
    main_site: str | None = None
    rcu_site: str | None = None
    monitor_site: str | None = None
    halt_site: str | None = None  # relocked a mutex in cpus.c after a condition wait: qemu_wait_io_event
    asked_address: str | None = None  # the mutex of its last `waiting on`


@dataclass
class Found:
    fmt: str
    bql: str | None
    bql_how: str
    bql_sites: list[tuple[str, int]]
    threads: dict[int | None, ThreadFacts]
    roles: dict[int | None, tuple[str, str]]  # role, how it was inferred
    first_ns: int
    last_ns: int
    first_stamp: str


def _bql_of(at_bql_sites: Counter[str]) -> str | None:
    return at_bql_sites.most_common(1)[0][0] if at_bql_sites else None


def guess_bql(files: TraceFiles) -> str | None:
    """Pass one: the mutex most often taken at the BQL's call sites, from a quick count over the files; pass
    two counts every mutex event of every line, and is read again if the BQL it finds is another."""
    at_bql_sites: Counter[str] = Counter()
    for (address, site), n in files.mutex_sites().items():
        if _is_bql_site(site):
            at_bql_sites[address] += n
    return _bql_of(at_bql_sites)


_VCPU, _MAIN, _MONITOR, _RCU = 1, 2, 3, 4


@functools.lru_cache(maxsize=4096)
def _site_kind(site: str) -> tuple[bool, int, bool]:
    """(a BQL call site, the role it suggests, in cpus.c) of a mutex's call site."""
    role = (_VCPU if any(part in site for part in VCPU_SITE_PARTS) else _MAIN if "util/main-loop.c" in site
            else _MONITOR if "monitor/" in site else _RCU if "util/rcu.c" in site else 0)
    return _is_bql_site(site), role, "/cpus.c" in site


def _vcpu_evidence(f: ThreadFacts) -> str | None:
    if f.vcpu_site:
        return f"takes the BQL at {f.vcpu_site}"
    if f.halt_site and not f.main_site:
        return f"comes back from a condition wait at {f.halt_site} (qemu_wait_io_event) and is not the main loop"
    return None


def _roles(threads: Mapping[int | None, ThreadFacts]) -> dict[int | None, tuple[str, str]]:
    roles: dict[int | None, tuple[str, str]] = {}
    # vCPU threads start in cpu_index order, so thread ids rise with it: a vCPU thread that never logged its
    # index gets the lowest one no other thread has, in thread id order.
    known = {f.cpu_index for f in threads.values() if f.cpu_index is not None}
    free = (i for i in itertools.count() if i not in known)
    unnumbered = {tid: next(free) for tid in sorted(t for t, f in threads.items()
                                                     if t is not None and f.cpu_index is None and _vcpu_evidence(f))}
    for tid, f in threads.items():
        if f.cpu_index is not None:
            roles[tid] = (f"vcpu {f.cpu_index}", "cpu_index of its kvm_* events")
        elif tid in unnumbered:
            roles[tid] = (f"vcpu {unnumbered[tid]}", f"{_vcpu_evidence(f)}; index from thread id order")
        elif f.main_site:
            roles[tid] = ("main", f"takes mutexes at {f.main_site}: the main loop")
        elif f.monitor_site:
            roles[tid] = ("monitor", f"takes mutexes at {f.monitor_site}: the monitor's I/O thread")
        elif f.rcu_site:
            roles[tid] = ("rcu", f"takes mutexes at {f.rcu_site} and is neither a vCPU nor the monitor")
        else:
            roles[tid] = ("unknown", "")
    return roles


class Wait:
    """A thread's wait for a mutex: from `waiting on` to `taken` (end_ns None: not taken when its window ended)."""

    __slots__ = ("condition", "end_ns", "mutex", "owner", "site", "start_ns")

    def __init__(self, mutex: str, site: str, start_ns: int, condition: bool = False) -> None:
        self.mutex, self.site, self.start_ns = mutex, site, start_ns
        self.end_ns: int | None = None
        self.owner: Activity | None = None  # who held the mutex meanwhile: the last to release it during the wait
        # qemu_cond_wait: `released` then, with no line between, `taken` and no `waiting on` - blocked on the
        # condition variable, then relocking the mutex (QEMU traces no condition event)
        self.condition = condition


class Activity:
    """What a thread did while it held one mutex, from its `taken` to its `released` (or the end of the trace):
    its events, the time it spent waiting for other mutexes, and its silences (no event for at least the
    silence threshold while not waiting). One is made for every `taken`: a plain class, quick to make. Its
    events and last event are the thread's lines since `taken_at`, set once they are over (`stop`)."""

    __slots__ = (
        "blocked_ns",
        "end_ns",
        "events",
        "last_event",
        "last_event_ns",
        "longest_silence_ns",
        "longest_wait",
        "mutex",
        "partial",
        "silences",
        "silent_ns",
        "site",
        "stamp",
        "start_ns",
        "taken_at",
        "tid",
        "waits",
    )

    def __init__(self, tid: int | None, mutex: str, site: str, start_ns: int, stamp: str, end_ns: int | None,
                 last_event: Line | None, partial: bool = False, taken_at: int = 0) -> None:
        self.tid, self.mutex, self.site, self.start_ns, self.stamp = tid, mutex, site, start_ns, stamp
        self.taken_at = taken_at  # how many lines its thread had, its `taken` the last
        self.end_ns = end_ns
        self.events = self.blocked_ns = self.waits = self.silent_ns = self.silences = self.longest_silence_ns = 0
        self.longest_wait: Wait | None = None
        self.last_event_ns = start_ns if last_event is not None else 0
        self.last_event = last_event
        self.partial = partial  # taken before the trace begins: only its release is seen

    def stop(self, lines: int, last_event: Line | None, last_ns: int) -> None:
        """Its events are over: its thread's first `lines` lines, the last of them `last_event` at `last_ns`."""
        self.events = lines - self.taken_at
        self.last_event, self.last_event_ns = last_event, last_ns

    def add_wait(self, wait: Wait, end_ns: int) -> None:
        self.blocked_ns += end_ns - max(wait.start_ns, self.start_ns)
        self.waits += 1
        if self.longest_wait is None or _span(wait, end_ns) > _span(self.longest_wait, end_ns):
            self.longest_wait = wait

    def add_silence(self, gap_ns: int) -> None:
        self.silent_ns += gap_ns
        self.silences += 1
        if gap_ns > self.longest_silence_ns:
            self.longest_silence_ns = gap_ns


def _span(wait: Wait, end_ns: int) -> int:
    return (wait.end_ns if wait.end_ns is not None else end_ns) - wait.start_ns


def _trim(act: Activity) -> None:
    """Keep the chain behind a mutex's owner to CHAIN_DEPTH links: finished activities refer to older ones,
    and an unbounded history must not stay in memory through them."""
    for _ in range(CHAIN_DEPTH):
        wait = act.longest_wait
        if wait is None or wait.owner is None:
            return
        act = wait.owner
    if act.longest_wait is not None:
        act.longest_wait.owner = None


class Hold:
    """One hold of the BQL."""

    __slots__ = ("activity", "end_ns", "site", "stamp", "start_ns", "tid", "waiters", "waiting_for")

    def __init__(self, tid: int | None, start_ns: int, site: str, stamp: str, activity: Activity,
                 waiters: dict[int | None, tuple[str, int]]) -> None:
        self.tid, self.start_ns, self.site, self.stamp, self.activity = tid, start_ns, site, stamp, activity
        self.end_ns: int | None = None
        # Who waited for the BQL during the hold: tid -> (site, since); each waits at least until the hold ends.
        self.waiters = waiters
        self.waiting_for: Wait | None = None  # another mutex the holder asked for and had not got at its end


@dataclass(slots=True)
class PerThread(ThreadFacts):
    order: int = 0  # its place among the threads, by its first line
    holds: Durations = field(default_factory=Durations)
    waits: Durations = field(default_factory=Durations)
    waiting: tuple[str, int] | None = None  # waiting for the BQL: where it asked, since when
    last_line: Line | None = None
    asked: Wait | None = None  # a mutex asked for and not yet taken
    held: dict[str, Activity] = field(default_factory=dict)  # the mutexes it holds now
    prev_ns: int = 0  # its previous event
    released_last: str | None = None  # the mutex its previous line released

    @property
    def last_event(self) -> str:
        line = self.last_line
        return f"{line[2]} {line[3]}".rstrip() if line is not None else ""  # name, args


@dataclass
class _Pass:
    """What pass two leaves: the threads, the holds and the mutexes' owners; intervals name threads by id."""

    at_bql_sites: Counter[str]
    sites: dict[str, Counter[str]]
    per: dict[int | None, PerThread]
    first: Line | None
    last_ns: int
    intervals: list[Interval]
    holder: Hold | None
    longest: Hold | None
    lockup: Hold | None
    owners: dict[str, Activity]


# A gap in a holder's events counts as silence from this share of --threshold (10 ms at the default 1 s).
SILENCE_SHARE = 100
CHAIN_DEPTH = 8


def _pass_two(files: TraceFiles, bql: str | None, threshold_ns: int, silence_ns: int, timeline: bool) -> _Pass:
    """Pass two: every line once, in time order. What each thread's lines say of its role (the BQL's call
    sites counted exactly), and with `bql` taken for the BQL: every hold and wait of it, and what each holder
    of any mutex did while it held it. One loop, written for speed: most lines of a trace are mutex events."""
    # The arguments of every mutex event: [how many lines, the mutex, its site, the site's role and in cpus.c]
    mutex_lines: dict[str, list[Any]] = {}
    per: dict[int | None, PerThread] = {}
    waiting_bql: dict[int | None, tuple[str, int]] = {}  # the threads waiting for the BQL: their `waiting`
    intervals: list[Interval] = []  # with thread ids for names
    holder: Hold | None = None
    longest: Hold | None = None
    longest_ns = -1
    lockup: Hold | None = None
    lockup_ns = -1
    first: Line | None = None
    last_ns = 0
    origin = 0
    owners: dict[str, Activity] = {}  # mutex -> the activity of the thread holding it now
    released: dict[str, Activity] = {}  # mutex -> the last finished activity of a thread that held it
    lockups = files.timestamps and files.thread_ids
    cpu_index = _CPU_INDEX.match
    LOCK, LOCKED = MUTEX_EVENTS[:2]  # else qemu_mutex_unlock

    def close(hold: Hold, end_ns: int, ongoing: bool) -> None:
        nonlocal longest, longest_ns, lockup, lockup_ns
        hold.end_ns = end_ns
        held = end_ns - hold.start_ns
        if ongoing or hold.activity.end_ns is None:  # still held, or its release was never traced (a cut file)
            hold.waiting_for = per[hold.tid].asked
        if not ongoing:
            per[hold.tid].holds.add(held)
        if timeline:
            intervals.append(Interval(hold.tid, "BQL held", hold.start_ns - origin, end_ns - origin,  # type: ignore
                                      hold.site, open=ongoing))
        if held > longest_ns:
            longest, longest_ns = hold, held
        # A lockup: held past the threshold while another thread waited past it too (not merely a long hold,
        # such as machine creation under the BQL, that someone asked for at its very end).
        if held > threshold_ns and held > lockup_ns and lockups and hold.waiters and \
                end_ns - min(since for _, since in hold.waiters.values()) > threshold_ns:
            lockup, lockup_ns = hold, held

    state: PerThread | None = None
    last_tid: int | None = None
    for batch in files.batches():
        if first is None:
            first = batch[0]
            origin = first[0]
        for line in batch:
            t, tid, event, args, stamp, mutex = line
            if tid != last_tid or state is None:  # a thread's lines often come in runs
                state = per.get(tid)
                if state is None:
                    state = per[tid] = PerThread(order=len(per))
                last_tid = tid
            state.events += 1
            if mutex is None:  # not a mutex event: what it says of the thread, and a turn of any mutex it holds
                if event.startswith("kvm_"):
                    m = cpu_index(args)
                    if m:
                        state.cpu_index = int(m.group(1))
                    if event == "kvm_cpu_exec" and state.vcpu_site is None:
                        state.vcpu_site = "kvm_cpu_exec"
                state.released_last = None
                if state.held and t - state.prev_ns >= silence_ns and state.asked is None:
                    for act in state.held.values():
                        act.add_silence(t - state.prev_ns)
                state.prev_ns = t
                state.last_line = line
                continue
            facts = mutex_lines.get(args)
            if facts is None:
                facts = mutex_lines[args] = [0, *mutex, *_site_kind(mutex[1])[1:]]
            facts[0] += 1
            _, address, site, role, in_cpus_c = facts
            if role:
                if role == _VCPU:
                    if state.vcpu_site is None:
                        state.vcpu_site = site
                elif role == _MAIN:
                    if state.main_site is None:
                        state.main_site = site
                elif role == _MONITOR:
                    if state.monitor_site is None:
                        state.monitor_site = site
                elif state.rcu_site is None:
                    state.rcu_site = site
            if state.released_last is not None:
                if event == LOCKED and state.asked is None and \
                        address == state.released_last:  # back from qemu_cond_wait: it waited since then
                    state.asked = Wait(address, site, state.prev_ns, True)
                state.released_last = None
            # What this thread did since its previous event, for each mutex it holds: waited (counted when the
            # wait ends), or was silent, or was busy (its events, counted when they are over). Every held mutex
            # was taken at one of this thread's lines, so no later than its previous one.
            held = state.held
            before_ns = state.prev_ns
            if held and t - before_ns >= silence_ns and state.asked is None:
                for act in held.values():
                    act.add_silence(t - before_ns)
            state.prev_ns = t
            if event == LOCK:
                state.asked_address = address
                state.asked = Wait(address, site, t)
                if address == bql:
                    waiting_bql[tid] = state.waiting = (site, t)
                    if holder is not None and holder.tid != tid:
                        holder.waiters.setdefault(tid, state.waiting)
            elif event == LOCKED:
                if in_cpus_c and state.halt_site is None and state.asked_address != address:
                    state.halt_site = site  # taken with no `waiting on`: back from a condition wait
                wait, state.asked = state.asked, None
                if wait is not None and wait.mutex == address:
                    wait.end_ns = t
                    last = released.get(address)
                    if last is not None and last.end_ns is not None and last.end_ns >= wait.start_ns and \
                            last.tid != tid and not wait.condition:
                        wait.owner = last
                        _trim(last)
                    for act in held.values():
                        act.add_wait(wait, t)
                    if timeline and t - wait.start_ns >= silence_ns and bql in held and \
                            address != bql:  # a BQL holder's wait long enough to show
                        intervals.append(Interval(tid, "mutex wait", wait.start_ns - origin,  # type: ignore
                                                  t - origin, f"{address} ({wait.site})"))
                act = owners[address] = Activity(tid, address, site, t, stamp, None, line, False, state.events)
                other = held.setdefault(address, act)
                if other is not act:  # taken again with no release (a cut file): the other's last line is this
                    other.stop(state.events, line, t)
                    held[address] = act
                if address == bql:
                    if holder is not None:  # a missing unlock (a cut file): the previous hold ends here
                        close(holder, t, False)
                    if state.waiting is not None:
                        where, since = state.waiting
                        state.waits.add(t - since)
                        if timeline and t > since:
                            intervals.append(Interval(tid, "BQL wait", since - origin, t - origin,  # type: ignore
                                                      where))
                        state.waiting = None
                        del waiting_bql[tid]
                    # Who waits for it now, in the threads' order (as a walk over all of them would find them);
                    # most often one thread or none, with nothing to order.
                    waiters = (dict(sorted(waiting_bql.items(), key=lambda w: per[w[0]].order)) if len(waiting_bql) > 1
                               else waiting_bql.copy())
                    holder = Hold(tid, t, site, stamp, act, waiters)
            else:
                state.released_last = address
                act_or_none = held.pop(address, None)
                if act_or_none is None:
                    if address != bql:  # taken before the trace: who released it
                        released[address] = Activity(tid, address, "", origin, "", t, None, True)
                else:  # its release is not one of its events
                    act_or_none.stop(state.events - 1, state.last_line, before_ns)
                    act_or_none.end_ns = t
                    released[address] = act_or_none
                    if owners.get(address) is act_or_none:
                        del owners[address]
                if address == bql and holder is not None and holder.tid == tid:
                    close(holder, t, False)
                    holder = None
            state.last_line = line
        last_ns = batch[-1][0]
    if holder is not None:
        close(holder, last_ns, True)
    for thread in per.values():
        for act in thread.held.values():
            act.stop(thread.events, thread.last_line, thread.prev_ns)
    at_bql_sites: Counter[str] = Counter()
    sites: dict[str, Counter[str]] = {}
    for count, address, site, _, _ in mutex_lines.values():  # in the order each first appeared, as line by line
        if _is_bql_site(site):
            at_bql_sites[address] += count
            sites.setdefault(address, Counter())[site] += count
    return _Pass(at_bql_sites, sites, per, first, last_ns, intervals, holder, longest, lockup, owners)


def analyse(files: TraceFiles, threshold_s: float = 1.0, timeline: bool = False) -> dict[str, Any]:
    """Both passes, and the summary (`--json`'s object)."""
    threshold_ns = round(threshold_s * NS)
    silence_ns = max(threshold_ns // SILENCE_SHARE, 1)
    guess = guess_bql(files)
    run = _pass_two(files, guess, threshold_ns, silence_ns, timeline)
    bql = _bql_of(run.at_bql_sites)
    if bql != guess:  # the quick count was wrong (damaged lines, odd line ends): read again with the right one
        run = _pass_two(files, bql, threshold_ns, silence_ns, timeline)
    survey_stats = files.stats
    per, intervals, holder, longest, lockup, owners = (run.per, run.intervals, run.holder, run.longest, run.lockup,
                                                       run.owners)
    how, top = "no mutex is taken from the BQL's call sites (util/main-loop.c, cpus.c, accel/)", []
    if bql is not None:
        top = run.sites[bql].most_common(6)
        how = (f"the mutex taken and released from the BQL's call sites (the main loop, cpus.c, the accelerators' "
               f"thread loops): {run.at_bql_sites[bql]:,} of its events are there, at "
               f"{', '.join(s for s, _ in top[:4])}")
    first = run.first
    found = Found(files.format, bql, how, top, dict(per), _roles(per), first[0] if first else 0, run.last_ns,
                  first[4] if first else "")  # t_ns, stamp
    origin = found.first_ns

    def name(tid: int | None) -> str:
        return f"{tid if tid is not None else '?'} {found.roles[tid][0]}"

    for iv in intervals:
        iv.thread = name(iv.thread)  # type: ignore[arg-type]  # pass two knew the thread id, not yet its role
    end_ns = found.last_ns
    if timeline:
        for tid, p in per.items():
            if p.waiting is not None:
                intervals.append(Interval(name(tid), "BQL wait", p.waiting[1] - origin, end_ns - origin,
                                          p.waiting[0], open=True))
            elif p.asked is not None and found.bql in p.held:  # the BQL holder waits for another mutex
                intervals.append(Interval(name(tid), "mutex wait", p.asked.start_ns - origin, end_ns - origin,
                                          f"{p.asked.mutex} ({p.asked.site})", open=True))
    seconds = files.timestamps

    def at(ns: int) -> float | None:
        return (ns - origin) / NS if seconds else None

    def describe(act: Activity, until_ns: int, seen: frozenset[int | None], depth: int) -> dict[str, Any]:
        """The thread's activity while it held the mutex, up to until_ns (its release, or the hold's end):
        blocked (waiting for another mutex most of the time), silent (no event most of the time), or
        spinning (busy: logging events through it); and, when it waited, on what and who held that."""
        end = act.end_ns if act.end_ns is not None else until_ns
        blocked, silent, longest_wait = act.blocked_ns, act.silent_ns, act.longest_wait
        longest_silence = act.longest_silence_ns
        p = per[act.tid]
        if act.end_ns is None:  # still held: the time since the thread's last event is a wait or a silence
            tail = end - max(act.last_event_ns, act.start_ns)
            if p.asked is not None:
                blocked += end - max(p.asked.start_ns, act.start_ns)
                if longest_wait is None or _span(p.asked, end) > _span(longest_wait, end):
                    longest_wait = p.asked
            elif tail >= silence_ns:
                silent += tail
                longest_silence = max(longest_silence, tail)
        held = end - act.start_ns
        busy = max(held - blocked - silent, 0)
        state: str | None = ("blocked" if blocked and blocked >= max(silent, busy) else "silent" if silent >= busy
                             else "spinning")
        if not seconds:
            state = None  # line order only: a wait is seen, a silence or a spin is not
        last = act.last_event
        d: dict[str, Any] = {
            "tid": act.tid, "role": found.roles[act.tid][0], "mutex": act.mutex, "site": act.site,
            "since_s": at(act.start_ns), "since_stamp": act.stamp, "held_s": held / NS if seconds else None,
            "released": act.end_ns is not None, "state": state,
            "blocked_s": blocked / NS if seconds else None, "silent_s": silent / NS if seconds else None,
            "busy_s": busy / NS if seconds else None, "events": act.events, "waits": act.waits,
            "longest_silence_s": longest_silence / NS if seconds else None,
            "last_event": f"{last[2]} {last[3]}".rstrip() if last is not None else "",  # name, args
            "last_event_before_end_s": (end - act.last_event_ns) / NS if seconds else None,
            "longest_wait": None,
        }
        if longest_wait is not None:
            wait_end = longest_wait.end_ns
            got = wait_end is not None and wait_end <= end
            owner = longest_wait.owner if got else owners.get(longest_wait.mutex)
            w: dict[str, Any] = {
                "mutex": longest_wait.mutex, "site": longest_wait.site, "since_s": at(longest_wait.start_ns),
                "waited_s": _span(longest_wait, end) / NS if seconds else None, "got_it": got,
                "got_it_before_end_s": (end - wait_end) / NS if got and seconds and wait_end is not None else None,
                "held_by_tid": owner.tid if owner else None,
                "held_by_role": found.roles[owner.tid][0] if owner else None, "held_by": None, "deadlock": False,
                "condition": longest_wait.condition,
                "taken_before_trace": bool(owner and owner.partial)}
            if owner is not None and owner.partial:
                pass  # only its release is in the trace: nothing to describe
            elif owner is not None and owner.tid in seen:
                # Back to a thread already in the chain: with both waits open at the end, a deadlock.
                w["deadlock"] = not got and owner.end_ns is None
            elif owner is not None and depth < CHAIN_DEPTH:
                w["held_by"] = describe(owner, end_ns, seen | {owner.tid}, depth + 1)
            d["longest_wait"] = w
        return d

    def hold_dict(h: Hold) -> dict[str, Any]:
        assert h.end_ns is not None
        waiters = [{"tid": tid, "role": found.roles[tid][0], "site": site,
                    "since_s": (since - origin) / NS if seconds else None,
                    "waited_s": (h.end_ns - since) / NS if seconds else None}
                   for tid, (site, since) in sorted(h.waiters.items(), key=lambda kv: kv[1][1])]
        return {"tid": h.tid, "role": found.roles[h.tid][0], "site": h.site, "start_stamp": h.stamp,
                "start_s": (h.start_ns - origin) / NS if seconds else None,
                "held_s": (h.end_ns - h.start_ns) / NS if seconds else None,
                "held_lines": None if seconds else h.end_ns - h.start_ns,
                "ongoing": h is holder, "waiters": waiters,
                "holder": describe(h.activity, h.end_ns, frozenset({h.tid}), 0)}

    summary: dict[str, Any] = {
        "format": "qemu-trace", "line_format": found.fmt, "files": files.paths,
        "timestamps": seconds, "thread_ids": files.thread_ids,
        "lines": survey_stats.lines, "events": survey_stats.events, "other_lines": survey_stats.other,
        "out_of_order": survey_stats.out_of_order, "corrupt_count": survey_stats.corrupt_count,
        "corrupt": [{"file": p, "line": n, "why": why} for p, n, why in survey_stats.corrupt],
        "span_s": (end_ns - origin) / NS if seconds else None, "first_stamp": found.first_stamp,
        "bql": {"mutex": found.bql, "how": found.bql_how,
                "sites": [{"site": s, "events": n} for s, n in found.bql_sites]},
        "threads": [{"tid": tid, "role": found.roles[tid][0], "role_from": found.roles[tid][1],
                     "events": found.threads[tid].events, "bql_hold": p.holds.to_dict(),
                     "bql_wait": p.waits.to_dict(),
                     "waiting_for_bql_at_end": p.waiting[0] if p.waiting else None, "last_event": p.last_event}
                    for tid, p in sorted(per.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))],
        "longest_hold": hold_dict(longest) if longest is not None else None,
        "threshold_s": threshold_s, "silence_s": silence_ns / NS,
        "lockup": _lockup(lockup, hold_dict) if lockup is not None else None,
    }
    if timeline:
        names = [name(tid) for tid in sorted(per, key=lambda t: (t is None, t or 0))]
        instants = [Instant(name(lockup.tid), "lockup: BQL held past the threshold",
                            lockup.start_ns + threshold_ns - origin)] if lockup is not None else []
        summary["_timeline"] = Timeline(names, sorted(intervals, key=lambda iv: (iv.thread, iv.start_ns)),
                                        instants, [(0, 0)], {}, end_ns - origin)
    return summary


def _lockup(h: Hold, hold_dict: Any) -> dict[str, Any]:
    """The longest hold past the threshold that others waited on, and what its holder did during it."""
    assert h.end_ns is not None
    d = hold_dict(h)
    act = d["holder"]
    return {"holder": h.tid, "holder_role": d["role"], "site": h.site, "since_stamp": h.stamp,
            "since_s": d["start_s"], "held_for_s": d["held_s"], "ongoing": d["ongoing"],
            "holder_state": act["state"], "holder_last_event": act["last_event"],
            "holder_silent_s": act["last_event_before_end_s"],
            "holder_waiting_for": {"mutex": h.waiting_for.mutex, "site": h.waiting_for.site}
            if h.waiting_for else None,
            "holder_during_hold": act,
            "waiters": [{"tid": w["tid"], "role": w["role"], "site": w["site"], "waited_s": w["waited_s"]}
                        for w in d["waiters"]]}


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"QEMU trace: {', '.join(s['files'])} ({s['line_format']} lines; {s['events']:,} events, "
             f"{s['other_lines']:,} other lines, {s['corrupt_count']:,} corrupt"
             + (f", {s['out_of_order']:,} out of order beyond the reorder window" if s["out_of_order"] else "")
             + (f"; {s['span_s']:.6f} s from {s['first_stamp']})" if s["timestamps"] else "; no timestamps)")]
    for c in s["corrupt"][:10]:
        lines.append(f"  {c['file']} line {c['line']}: {c['why']}")
    if not s["timestamps"]:
        lines.append("no timestamps (record with -msg timestamp=on): holds and waits are counted, not timed, "
                     "and no lockup can be told")
    elif not s["thread_ids"]:
        lines.append("no thread ids (QEMU 10.1+: record with -d tid -D trace-%d.log): every line is one thread's, "
                     "and no lockup can be told")
    bql = s["bql"]
    if bql["mutex"] is None:
        lines.append(f"no BQL found: {bql['how']} (trace with -trace 'qemu_mutex_*')")
        return "\n".join(lines)
    lines.append(f"BQL: mutex {bql['mutex']}: {bql['how']}")
    lines += ["", "thread    role      events   BQL holds  total s    max s      p99 s     | waits  total s    max s"
                  "      p99 s"]
    for t in s["threads"]:
        h, w = t["bql_hold"], t["bql_wait"]
        lines.append(f"{t['tid'] if t['tid'] is not None else '?':<9} {t['role']:<9} {t['events']:>7,} {h['count']:>9,}"
                     f" {h['total_s']:>10.6f} {h['max_s']:>10.6f} {h['p99_s']:>10.6f} | {w['count']:>5,}"
                     f" {w['total_s']:>10.6f} {w['max_s']:>10.6f} {w['p99_s']:>10.6f}")
    hold = s["longest_hold"]
    if hold and s["timestamps"]:
        who = ", ".join(f"{w['tid']} {w['role']} at {w['site']}" for w in hold["waiters"][:6]) or "nobody"
        if len(hold["waiters"]) > 6:
            who += f" and {len(hold['waiters']) - 6} more"
        lines += ["", f"longest hold: {hold['tid']} ({hold['role']}) for {hold['held_s']:.6f} s from "
                      f"{hold['start_stamp']}{' (still held at the end)' if hold['ongoing'] else ''}, "
                      f"taken at {hold['site']}; waited: {who}"]
    lock = s["lockup"]
    if lock is None:
        if s["timestamps"] and s["thread_ids"]:
            lines += ["", f"no lockup: no thread held the BQL over {s['threshold_s']} s while others waited"]
        return "\n".join(lines)
    lines += ["", f"LOCKUP: thread {lock['holder']} ({lock['holder_role']}) holds the BQL since {lock['since_stamp']}"
                  f" ({lock['held_for_s']:.6f} s{', still held at the end' if lock['ongoing'] else ''}), taken at "
                  f"{lock['site']}; holder {activity_text(lock['holder_during_hold'], 'hold')}"]
    act = lock["holder_during_hold"]
    depth = 0
    while (wait := act["longest_wait"]) is not None and wait["held_by_tid"] is not None:
        depth += 1
        owner = act = wait["held_by"]
        who = f"thread {wait['held_by_tid']} ({wait['held_by_role']})"
        if owner is None:
            lines.append(f"{'  ' * depth}mutex {wait['mutex']} was held by {who}"
                         + (", taken before the trace begins" if wait["taken_before_trace"] else
                            ": a deadlock, the chain is back at that thread" if wait["deadlock"] else
                            ", already in the chain"))
            break
        lines.append(f"{'  ' * depth}mutex {wait['mutex']} {'was' if owner['released'] else 'is'} held by {who} "
                     f"since {owner['since_stamp']}, taken at {owner['site']}"
                     + (f", for {owner['held_s']:.6f} s" if owner["released"] else ", still at the end")
                     + f"; {activity_text(owner, 'hold of it')}")
    if lock["holder_waiting_for"]:
        lines.append(f"  the holder waits for mutex {lock['holder_waiting_for']['mutex']} "
                     f"(asked at {lock['holder_waiting_for']['site']})")
    for w in lock["waiters"]:
        lines.append(f"  waiting: thread {w['tid']} ({w['role']}) at {w['site']} for {w['waited_s']:.6f} s"
                     f"{' and still waiting' if lock['ongoing'] else ''}")
    return "\n".join(lines)


def activity_text(a: dict[str, Any], what: str) -> str:
    """`BLOCKED: ...`, `SILENT: ...` or `SPINNING: ...`: what a thread did while it held a mutex."""
    last = (f"last event {a['last_event']!r}, {a['last_event_before_end_s']:.6f} s before the end of the {what}"
            if a["events"] else f"no event since taking it ({a['last_event']!r})")
    events = f"{a['events']:,} event{'s' if a['events'] != 1 else ''}, " if a["events"] else ""
    wait = a["longest_wait"]
    if a["state"] == "blocked" and wait is not None:
        got = (f"got it {wait['got_it_before_end_s']:.6f} s before the end of the {what}" if wait["got_it"]
               else f"still waiting at the end of the {what}")
        what_for = (f"on a condition variable (qemu_cond_wait: mutex {wait['mutex']} released, then retaken at "
                    f"{wait['site']}" if wait["condition"] else f"for mutex {wait['mutex']} (asked at {wait['site']}")
        return (f"BLOCKED: {wait['waited_s']:.6f} s waiting {what_for}; "
                f"{got}); {a['blocked_s']:.6f} s of the {what} blocked on mutexes or conditions, "
                f"{a['silent_s']:.6f} s silent, {a['busy_s']:.6f} s busy; {events}{last}")
    if a["state"] == "silent":
        return (f"SILENT: no event for {a['silent_s']:.6f} s of the {what} (the longest silence "
                f"{a['longest_silence_s']:.6f} s; stopped, sleeping or in a system call: the trace does not say), "
                f"{a['blocked_s']:.6f} s blocked on mutexes or conditions, {a['busy_s']:.6f} s busy; {events}{last}")
    return (f"SPINNING: busy, {a['events']:,} events in {a['held_s']:.6f} s ({a['blocked_s']:.6f} s blocked, "
            f"{a['silent_s']:.6f} s silent); {last}")
