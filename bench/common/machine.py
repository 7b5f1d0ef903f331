"""What machine a benchmark figure came from: one description shared by every script in bench/.

CPUs differ between sessions here (AVX2-only EPYCs; Zen 4 and Sapphire Rapids with AVX-512 BF16 and
AMX), and bf16 autocast turns on by itself on the latter, so every result names the CPU, its SIMD
and whether it has native bf16.
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni", "avx512_fp16")


def describe() -> dict[str, Any]:
    """CPU model, cores, SIMD flags, torch's CPU capability, native bf16, memory; the GPU if any."""
    import torch

    from napari_ramseg.core.device import cpu_supports_bf16

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "nproc": os.cpu_count(), "cpu": platform.processor() or "unknown"}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)}
        info["cpu"] = fields.get("Model name", info["cpu"])
        info["cores"] = fields.get("CPU(s)", "?")
        info["hypervisor"] = fields.get("Hypervisor vendor", "none")
        flags = fields.get("Flags", "").split()
        info["simd"] = [f for f in SIMD_FLAGS if f in flags]
    except (OSError, subprocess.SubprocessError):
        info["simd"] = []
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["bf16"] = info["bf16_native"] = cpu_supports_bf16()
    try:
        info["mem_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def one_line(info: dict[str, Any]) -> str:
    """``Intel(R) Xeon(R) Processor, 2 cores, torch 2.13.0+cpu AVX512 (avx2, ..., amx_bf16), native bf16: yes``.

    Older results recorded less; what they lack is said, not guessed."""
    text = f"{info.get('cpu', 'unknown CPU')}, {info.get('nproc', '?')} cores, torch {info.get('torch', '?')}"
    if "cpu_capability" in info:
        text += (f" {info['cpu_capability']} ({', '.join(info.get('simd', [])) or 'no SIMD flags read'}), "
                 f"native bf16: {'yes' if info.get('bf16', info.get('bf16_native')) else 'no'}")
    else:
        text += " (SIMD and bf16 support not recorded)"
    return text + (f", GPU {info['cuda']}" if info.get("cuda") else "")
