"""What a trial trained on, beyond its code and settings: the CPU model and its vector ISA.

oneDNN picks its kernels per CPU, so one trial trained on two CPU models gives curves that
differ in the last bits, which a few epochs can grow (2.6 pp after one epoch between an AMD
EPYC and an Intel Xeon). Each trial run logs both (`study.contract.CPU_MODEL`, `CPU_ISA`):
a virtual machine's model name can be as vague as "Intel(R) Xeon(R) Processor", and what
oneDNN dispatches on is the instruction set. A publish README names the machine."""

from __future__ import annotations

import platform
import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (platform's guess where there is none,
    often "")."""
    if not CPUINFO.exists():
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in CPUINFO.read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


# The /proc/cpuinfo flags oneDNN's kernel choice depends on (vector and matrix extensions).
ISA_FLAG = re.compile(r"(sse4_[12]|avx\w*|amx\w*|fma|f16c)")


def cpu_isa() -> str:
    """The CPU's vector/matrix instruction-set flags, sorted, space-separated ("" where
    /proc/cpuinfo has none, as on non-x86 machines)."""
    if not CPUINFO.exists():
        return ""
    flags = next((line.split(":", 1)[1].split() for line in CPUINFO.read_text().splitlines()
                  if line.startswith("flags")), [])
    return " ".join(sorted(flag for flag in flags if ISA_FLAG.fullmatch(flag)))
