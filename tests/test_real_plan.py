"""Real runs without a binary: which rows have a real counterpart, the QEMU command line, the guest's
/init, the initramfs format and the console read as verdicts."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from vcpu_sched.matrix import rows_for
from vcpu_sched.real import boots, guest
from vcpu_sched.real.kit import Cpio
from vcpu_sched.real.plan import NotRun, plan
from vcpu_sched.real.verdict import Reading, failures, verdict
from vcpu_sched.scenario import apply, load, scenario_names


def _plan(name: str, release: str = "11.1", **variant: object):  # type: ignore[no-untyped-def]
    scenario = load(name)
    return plan(apply(scenario.settings, dict(variant), "test"), dict(variant), release)


def test_the_migration_finding_runs_on_pseries_10_0_and_the_subsection_on_pseries() -> None:
    finding = _plan("spapr-migrate-from-9.2")
    assert finding.machine_type == "pseries-10.0"
    assert "maxcpus=2" in finding.script.cmdline
    assert finding.model.fix == "quiesced+migration" and finding.model.qemu_version == "11.1"
    assert _plan("spapr-migrate-from-9.2", rtas_stopped_state=True).machine_type == "pseries"
    # before 628bda1ab7 there is no subsection to leave out: the machine type stays the default
    assert _plan("spapr-migrate-from-9.2", "7.2").machine_type == "pseries"


@pytest.mark.parametrize(("name", "variant", "reason"), [
    ("spapr-rtas-stopped", {}, "accel=kvm needs a POWER host"),
    ("spapr-nmi-kdump", {"accel": "tcg", "nmi_fix": True}, "nmi_fix=true is a what-if"),
    ("spapr-migrate-from-9.2", {"fix": "quiesced"}, r"needs fix=quiesced; QEMU 11.1 has fix=quiesced\+migration"),
    ("powernv-core-stop-start", {}, "only pseries guests"),
    ("spapr-rtas-stopped", {"accel": "tcg", "fix": "lpcr-sync"}, "needs fix=lpcr-sync"),
])
def test_rows_without_a_real_counterpart_say_why(name: str, variant: dict[str, object], reason: str) -> None:
    with pytest.raises(NotRun, match=reason):
        _plan(name, **variant)


def test_every_tcg_pseries_row_either_plans_or_says_why() -> None:
    planned = 0
    for name in scenario_names():
        for row in rows_for(load(name)):
            try:
                p = plan(row.settings, row.variant, "11.1")
            except NotRun as e:
                assert str(e)
                continue
            planned += 1
            assert p.argv_tail[p.argv_tail.index("-machine") + 1].endswith("accel=tcg")
    assert planned >= 20


def test_the_guest_waits_where_the_model_holds_and_nowhere_else() -> None:
    lines = ['echo "smp: up"', 'echo "loop 1: 3 secondary CPUs offline"', guest.HOLD, 'echo "busy-loop: CPU 0 spins"',
             "spin"]
    body, waits = guest.place_waits(lines, ["Brought up", "secondary CPUs offline", "busy-loop: CPU 0"], 0)
    # a kernel line waits before the script, an offline hold waits in place, a busy loop goes on
    assert waits == [True, True, False]
    assert body == ["wait_monitor", 'echo "smp: up"', 'echo "loop 1: 3 secondary CPUs offline"', "wait_monitor",
                    'echo "busy-loop: CPU 0 spins"', "spin"]
    body, _ = guest.place_waits(lines, [], 250_000_000)
    assert "sleep 0.250" in body and guest.HOLD not in body


def test_every_scenario_monitor_pattern_is_placed() -> None:
    for name in scenario_names():
        settings = load(name).settings
        if settings.machine != "pseries" or not settings.monitor:
            continue
        script = guest.build(dataclasses.replace(settings, accel="tcg"))
        assert len(script.waits) == len(settings.monitor)
        assert script.body.count("wait_monitor\n") == sum(script.waits), name


def test_the_script_onlines_what_the_boot_left_stopped() -> None:
    script = _plan("spapr-migrate-from-9.2").script
    assert "cpu_on 2\ncpu_on 3" in script.body
    assert script.body.index("wait_monitor") < script.body.index("cpu_on 2")  # migrate before onlining
    kdump = _plan("spapr-nmi-kdump", accel="tcg").script
    assert kdump.kdump_cmdline is not None and "maxcpus=4" in kdump.kdump_cmdline
    assert "vcpu_sched_want=4" in kdump.kdump_cmdline  # the one kdump /init learns what to expect here
    assert "crashkernel=" in kdump.cmdline and "kexec -p /vmlinux" in kdump.body
    assert "kexec -s -p /vmlinux" in _plan("spapr-nmi-kdump", accel="tcg", kexec_syscall="kexec_file_load").script.body


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_the_boot_init_runs_the_script_it_reads_from_the_console_as_typed(tmp_path: Path) -> None:
    """Everything after the prelude (which needs a guest's /sys) under the host's sh, with the prelude's
    `ready`: it says it is ready once, then the script comes back byte for byte, leading blanks and
    backslashes included, and runs with the prelude's functions."""
    prelude = guest.PRELUDE.splitlines()
    traced = prelude.index(next(line for line in prelude if line.startswith("traced()")))
    ready = "\n".join([next(line for line in prelude if line.startswith("ready()")), *prelude[traced:traced + 3]])
    rest = guest.BOOT_INIT[len(guest.PRELUDE):]
    typed = "\n".join(["  greet 'a\\b'", "ready", "printf '%s\\n' \"tab\there\"", guest.END_OF_SCRIPT,
                       "echo not run"]) + "\n"
    script = "\n".join(["exec 3<&0", ready, "greet() { printf 'hello %s\\n' \"$1\"; }", rest])
    script = script.replace("/tmp/", f"{tmp_path}/").replace("/sys/kernel/tracing", "/nonexistent")  # says it
    done = subprocess.run(["sh", "-c", script], input=typed, capture_output=True, text=True, check=True, timeout=30)
    assert done.stderr == ""
    out = done.stdout
    assert out.splitlines() == [guest.READY, "hello a\\b", "tab\there"]  # a second `ready` says nothing


@pytest.mark.parametrize(("release", "variant", "reason"), [
    ("11.1", {}, None),  # pseries: env->quiesced is in the stream
    ("11.1", {"rtas_stopped_state": False}, "pseries-10.0 and older infer env->quiesced"),
    ("10.0", {}, "does not migrate env->quiesced"),
    ("9.2", {}, None),  # no env->quiesced yet, and the DEC is in the stream
    ("7.2", {}, "loses the decrementer"),
])
def test_a_saved_boot_is_restored_only_where_the_stream_carries_the_state(
        release: str, variant: dict[str, object], reason: str | None) -> None:
    found = _plan("spapr-cpu-offline-online", release, accel="tcg", **variant).fresh_boot
    assert found == reason if reason is None else reason in (found or "")


def test_a_system_reset_of_never_started_cpus_boots_afresh() -> None:
    """Found on QEMU 11.1.3, not derived (plan.fresh_boot_reason): after a restore an NMI checkstops there."""
    assert "never started" in (_plan("spapr-nmi-kdump", accel="tcg").fresh_boot or "")
    assert _plan("spapr-nmi-kdump", accel="tcg", boot_cpus=0).fresh_boot is None  # every CPU started


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio(1) to read the archive back")
def test_the_initramfs_is_a_newc_archive_cpio_reads(tmp_path: Path) -> None:
    archive = Cpio()
    archive.file("bin/busybox", b"\x7fELF" + bytes(1000), 0o755)
    archive.symlink("bin/sh", "/bin/busybox")
    archive.file("init", b"#!/bin/sh\necho hi\n", 0o755)
    (tmp_path / "a.cpio").write_bytes(archive.build() + archive.build())
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=(tmp_path / "a.cpio").read_bytes(),
                             capture_output=True, check=True).stdout.decode()
    assert "bin/sh -> /bin/busybox" in listing and "init" in listing and "bin/busybox" in listing
    subprocess.run(["cpio", "-id", "--quiet"], input=(tmp_path / "a.cpio").read_bytes(), cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_text() == "#!/bin/sh\necho hi\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755


def test_console_lines_become_the_models_verdicts() -> None:
    def read(*lines: str, lockup: str | None = None) -> str:
        return verdict(Reading(console=list(lines), lockup=lockup), plain_boot=False)[0]

    assert read("[   12.3] Processor 2 is stuck.", guest.DONE) == "stuck-cpu"
    assert read("[    3.1] start-cpu failed: -1", "[ 8.0] Processor 3 is stuck.", guest.DONE) == "bad-rtas-answer"
    assert read("smp: 4 CPUs online", guest.DONE) == "completed"
    assert read("smp: 2 CPUs online") == "deadline"
    assert read(guest.DONE, lockup="the monitor did not answer device_add") == "lockup"
    assert failures(["vcpu-sched: only 2 of 4 CPUs online"]) == [("stuck-cpu", "vcpu-sched: only 2 of 4 CPUs online")]
    assert verdict(Reading(console=[guest.DONE]), plain_boot=True)[0] == "booted"


@pytest.mark.parametrize(("argv", "message"), [
    (["--qemu-binary", "/nonexistent/qemu"], "--qemu-binary /nonexistent/qemu: no such executable"),
    (["--qemu-version", "7.2"], "--qemu-version: the binary's own version"),
    (["--deadline", "0"], "--deadline: between 1 and 86400"),
    (["--qemu-binary", "/bin/true"], "cannot ask it its version"),
])
def test_bad_real_options_are_one_line_and_status_2(argv: list[str], message: str) -> None:
    import sys

    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "real", "spapr-migrate-from-9.2", *argv],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_kvm_rows_pass_through_on_a_power_kvm_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from vcpu_sched.real import plan as planning

    monkeypatch.setattr(planning, "kvm_host", lambda: True)
    p = _plan("spapr-migrate-from-9.2", accel="kvm")
    tail = list(p.argv_tail)
    assert tail[tail.index("-machine") + 1] == "pseries-10.0,accel=kvm" and tail[tail.index("-cpu") + 1] == "host"


def test_every_monitor_command_a_scenario_may_use_has_a_qmp_counterpart() -> None:
    for command in ("system_reset", "stop", "cont", "migrate", "nmi", "info registers",
                    "device_add power10_v2.0-spapr-cpu-core,core-id=2"):
        assert _plan("spapr-migrate-from-9.2", monitor=[["smp: Brought up", command]]).monitor[0][1] == command


def test_saved_boots_are_kept_found_and_the_least_recently_used_removed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(boots, "KEEP", 2)
    store = boots.Store(tmp_path)

    def save(name: str, made_at: int) -> None:
        staged = store.staging(name)
        staged.write_bytes(b"state " + name.encode())
        store.keep(name, staged, ["Linux ppc64le", guest.READY])
        os.utime(tmp_path / name, (made_at, made_at))

    save("a", 1)
    save("b", 2)
    assert store.find("a") is not None  # a is used again: now b is the least recently used
    save("c", 3)
    assert store.find("b") is None
    found = store.find("a")
    assert found is not None and found.console == ["Linux ppc64le", guest.READY]
    assert found.state.read_bytes() == b"state a"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["a", "c"]


def test_a_saved_boot_depends_on_the_binary_its_command_line_and_its_files(tmp_path: Path) -> None:
    binary, kernel = tmp_path / "qemu", tmp_path / "vmlinux"
    binary.write_text("1")
    kernel.write_text("k")
    first = boots.key(str(binary), ["-smp", "4"], [kernel])
    assert first == boots.key(str(binary), ["-smp", "4"], [kernel])
    assert first != boots.key(str(binary), ["-smp", "2"], [kernel])
    kernel.write_text("another kernel")
    assert first != boots.key(str(binary), ["-smp", "4"], [kernel])


def test_one_run_at_a_time_saves_a_boot(tmp_path: Path) -> None:
    import asyncio

    store = boots.Store(tmp_path)
    inside: list[int] = []
    overlap: list[bool] = []

    async def one(n: int) -> None:
        async with store.locked("k"):
            overlap.append(bool(inside))
            inside.append(n)
            await asyncio.sleep(0)  # let the other try
            inside.remove(n)

    async def both() -> None:
        await asyncio.gather(one(1), one(2))

    asyncio.run(both())
    assert overlap == [False, False]


def test_a_migration_into_a_newer_binary_runs_the_sources_machine_type_and_its_stream() -> None:
    across = _plan_across("7.2", "11.1")
    assert across.machine_type == "pseries-7.2" and across.argv_tail[1] == "pseries-7.2,accel=tcg"
    assert across.destination == "11.1"
    # the model at the destination's release, loading a stream with no cpu/rtas_stopped subsection
    assert across.model.qemu_version == "11.1" and across.model.rtas_stopped_state is False
    assert across.model.fix == "quiesced+migration"
    assert _plan_across("11.0", "11.1").model.rtas_stopped_state is True  # 628bda1ab7 sends it
    with pytest.raises(NotRun, match="only forward migration"):
        _plan_across("11.1", "7.2")
    with pytest.raises(NotRun, match="has no migrate"):
        _plan_across("7.2", "11.1", monitor=[])
    with pytest.raises(NotRun, match="has no cpu/rtas_stopped subsection"):
        _plan_across("7.2", "11.1", rtas_stopped_state=True)


def _plan_across(source: str, destination: str, **variant: object):  # type: ignore[no-untyped-def]
    scenario = load("spapr-migrate-from-9.2")
    return plan(apply(scenario.settings, dict(variant), "test"), dict(variant), source, destination)
