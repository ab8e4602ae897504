"""crystalbench: crystal nets from PyTorch to analog op-amp circuits and FPGA logic."""

import os

__version__ = "0.1.0"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no such file)."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_pins(flags: set[str]) -> dict[str, str]:
    """The environment that pins torch's CPU kernels for a CPU with these flags.

    Training gives the same bits with any torch thread count only under MKL's strict
    conditional numerical reproducibility (without it, on this project's 2-core test
    machine, 24 of 144 small products such as (10, 32) @ (32, 64) differed in the last bits
    between 1 and 2 threads, and a run drifted). Across machines the kernels themselves
    differ: on that machine (AVX2, no AVX-512) ATen's non-vector kernels
    (ATEN_CPU_CAPABILITY=default) turn the seed-0 crystal of the earlier default config
    (without data.augment_warps) from 0.9749 / 48 neurons into 0.9582 / 40, and MKL's
    SSE2 branch (MKL_CBWR=COMPATIBLE) moves its weights by up to 4e-3. So where the CPU
    has AVX2 and FMA, ATen and MKL are held on their AVX2 code (an AVX-512 CPU would
    otherwise run other kernels); torch does not check the CPU when told, so nothing is
    pinned elsewhere. MKL honours a named branch
    on Intel CPUs only and takes its automatic one on others."""
    if {"avx2", "fma"} <= flags:
        return {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
    return {"MKL_CBWR": "AUTO,STRICT"}


# MKL and ATen read these when torch first loads, so they are set when the package is
# first imported; a user's own values are kept.
for _key, _value in kernel_pins(cpu_flags()).items():
    os.environ.setdefault(_key, _value)
