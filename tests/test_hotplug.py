"""DLPAR CPU hotplug: device_add of a spapr CPU core, from a scenario and over QMP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import run_in_test_clock, variant, wait_for
from vcpu_sched.errors import BadInput
from vcpu_sched.qemu_cmdline import parse
from vcpu_sched.scenario import load


async def test_the_hotplugged_cpu_starts_rtas_stopped_and_comes_up(autojump_clock: trio.testing.MockClock) -> None:
    settings = load("spapr-hotplug").settings
    result = await run_in_test_clock(settings)
    assert result.verdict == "completed" and result.cpus_online == 3
    assert "pseries-hotplug-cpu: CPU 2 added" in result.console
    assert result.cpu_stats["CPU 2/KVM"]["loop_iterations"] >= 1, "the new vCPU's thread ran"
    failed = await run_in_test_clock(variant(settings, monitor=(("dlpar: waiting", "device_add nonsense"),)))
    assert failed.verdict == "stuck-cpu" and failed.cpus_online == 2


def test_maxcpus_on_the_command_line() -> None:
    assert parse("qemu-system-ppc64 -M pseries -smp 2,maxcpus=4").overrides["maxcpus"] == 4
    assert "maxcpus" not in parse("qemu-system-ppc64 -M pseries -smp 2").overrides
    with pytest.raises(BadInput):
        parse("qemu-system-ppc64 -M pseries -smp 4,maxcpus=2")


qmp = pytest.importorskip("qemu.qmp")


def test_device_add_of_a_core_over_qmp(tmp_path: Path) -> None:
    """What real QEMU 7.2 answers for the same requests (qemu-system-ppc64 -M pseries -cpu power10
    -smp 1,maxcpus=4, recorded by hand): {} for the new core, "core 1 already populated", "core id 9 out of
    range", and the plugged slot gains a qom-path in query-hotpluggable-cpus."""
    sock = tmp_path / "q.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcpu_sched", "qemu", "--fix", "quiesced", "-M", "pseries,accel=tcg", "-cpu",
         "power10", "-smp", "1,maxcpus=4", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, 60)
        assert proc.poll() is None

        async def session() -> None:
            client = qmp.QMPClient("test")
            await client.connect(str(sock))
            slots = await client.execute("query-hotpluggable-cpus")
            assert [("qom-path" in s, s["props"]["core-id"]) for s in slots] == [
                (False, 3), (False, 2), (False, 1), (True, 0)]
            core = {"driver": "power10_v2.0-spapr-cpu-core", "core-id": 1}
            assert await client.execute("device_add", core) == {}
            for args, desc in ((core, "core 1 already populated"),
                               ({**core, "core-id": 9}, "core id 9 out of range")):
                with pytest.raises(qmp.ExecuteError) as error:
                    await client.execute("device_add", args)
                assert error.value.error.error.desc == desc
            slots = await client.execute("query-hotpluggable-cpus")
            assert [("qom-path" in s) for s in slots] == [False, False, True, True]
            cpus = await client.execute("query-cpus-fast")
            assert [c["cpu-index"] for c in cpus] == [0, 1]
            await client.disconnect()

        asyncio.run(session())
    finally:
        proc.kill()
        proc.wait()
