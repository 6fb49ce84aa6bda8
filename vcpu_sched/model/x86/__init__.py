"""target/i386 under KVM on the q35 machine, with Hyper-V's SynIC (`-cpu ...,hv-synic`): the third target,
for the common code's exclusive sections (model/exclusive.py), which only x86's SynIC work reaches here.

cpu.py      X86CPU's state and has_work             (target/i386/cpu.h, cpu.c)
kvm.py      the x86 KVM exit path and kernel         (target/i386/kvm/kvm.c; Linux arch/x86/kvm lapic.c, hyperv.c)
hyperv.py   the SynIC exit and its safe work         (target/i386/kvm/hyperv.c, hw/hyperv/hyperv.c)
guest.py    the guest's programs                     (Linux arch/x86/kernel/smpboot.c, drivers/hv/hv.c)
machine.py  the board, its reset and CPU hot-add     (hw/i386/pc.c, x86-common.c, target/i386/cpu.c)
"""
