"""bench/__main__.py: the machine line of bench/results.md names the CPU the ratios were measured on."""
from __future__ import annotations

import platform

from bench.__main__ import cpu_model

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme avx512f

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""

ARM_NO_NAME = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
"""


def test_cpu_model_reads_the_model_name_of_proc_cpuinfo():
    assert cpu_model(X86) == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"


def test_cpu_model_falls_back_to_platform_without_a_model_name():
    assert cpu_model(ARM_NO_NAME) == (platform.processor() or platform.machine())
    assert cpu_model("") == (platform.processor() or platform.machine())
