"""What a trial trained on, beyond its code and settings: the CPU model.

oneDNN picks its kernels per CPU, so one trial trained on two CPU models gives curves that
differ in the last bits, which a few epochs can grow (2.6 pp after one epoch between an AMD
EPYC and an Intel Xeon). Each trial run logs it (`study.contract.CPU_MODEL`), and a publish
README names the machine it ran on."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (platform's guess where there is none,
    often "")."""
    if not CPUINFO.exists():
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in CPUINFO.read_text().splitlines()
                 if line.startswith("model name")), platform.processor())
