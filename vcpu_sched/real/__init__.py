"""Real QEMU in the loop: a scenario run on a real qemu-system-ppc64 with a real Linux guest.

kit: the guest kit (Debian's ppc64le kernel, busybox, kexec-tools) and the initramfs built from it;
guest: the /init script that runs a scenario's workload; plan: a scenario's settings as a QEMU command
line and a monitor script, or why they have no real counterpart; session: one run over QMP (qemu.qmp);
verdict: the console read as the model's verdicts; command: `vcpu-sched real`; against: the matrix
against real binaries.
"""
