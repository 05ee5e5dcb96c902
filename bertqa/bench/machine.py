"""Which machine a benchmark ran on: CPU model, family/model and the micro-architecture they name,
the vector ISA the CPU offers, the path the customcpu kernel picked, and its measured int8 peak.

The family/model table covers the AMD cores these runs land on (Zen 3 "Milan", Zen 4 "Genoa",
Zen 5 "Turin"); anything else is printed by its numbers alone. /proc/cpuinfo on a VM may say only
"AMD EPYC", which is why the numbers are printed beside the name.
"""
from __future__ import annotations

import os
import platform

from bertqa.bench import cpu_name

# flags from /proc/cpuinfo that decide which int8 kernels can run
ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8")
PEAK_PATHS = ("avx512vnni", "avx2")     # customcpu paths with a peak loop (bertqa.bench.gemm)


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def amd_core(family: int, model: int) -> str | None:
    """The Zen generation of an AMD family/model (codename of the server part where known)."""
    if family == 0x17:
        return "Zen 2" if model >= 0x30 else "Zen / Zen+"
    if family == 0x19:
        if 0x10 <= model <= 0x1F:
            return "Zen 4 (Genoa)"
        if 0x60 <= model <= 0x7F:
            return "Zen 4"
        if 0xA0 <= model <= 0xAF:
            return "Zen 4c (Bergamo)"
        return "Zen 3 (Milan)" if model <= 0x0F else "Zen 3"
    if family == 0x1A:
        return "Zen 5 (Turin)" if model <= 0x1F else "Zen 5"
    return None


def describe(info: dict | None = None) -> dict:
    """What the CPU is and offers, without running anything: name, vendor, family, model,
    core (micro-architecture, where known), flags (the ISA_FLAGS present), cpus."""
    info = cpuinfo() if info is None else info
    family, model = (int(info[k]) if info.get(k, "").isdigit() else None for k in ("cpu family", "model"))
    vendor = info.get("vendor_id", platform.processor() or "unknown")
    core = amd_core(family, model) if vendor == "AuthenticAMD" and family is not None else None
    present = set(info.get("flags", "").split())
    return dict(name=info.get("model name") or cpu_name(), vendor=vendor, family=family, model=model,
                core=core, flags=[f for f in ISA_FLAGS if f in present], cpus=os.cpu_count())


def kernel_path() -> tuple[str | None, str]:
    """(the ISA path customcpu picks here, or None, and why)."""
    from bertqa import native
    why = native.unavailable()
    if why:                                     # the extension is not built: say so, go on
        return None, f"customcpu not built ({why})"
    return native.select_isa(), "picked at run time from the CPU's features"


def peak_path() -> str | None:
    """The fastest customcpu path with a peak loop on this CPU, or None (also where the
    extension is not built)."""
    from bertqa import native
    if native.unavailable():
        return None
    features = native.cpu_features()
    return next((p for p in PEAK_PATHS if features.get(p)), None)


def measure_int8_peak(threads: int, seconds: float = 0.3) -> dict | None:
    """{isa, gops (wall clock on `threads` threads), gops_1t (one thread)} for the fastest path
    with a peak loop, best of 2; None where the extension is not built or has no such path."""
    from bertqa import native
    isa = peak_path()
    if isa is None:
        return None
    nat = native.extension()
    return dict(isa=isa, threads=threads,
                gops=max(nat.measure_peak(isa, seconds, threads) for _ in range(2)),
                gops_1t=max(nat.measure_peak(isa, seconds, 1) for _ in range(2)))


def machine_lines(d: dict, isa: str | None, isa_note: str, peak: dict | None) -> list[str]:
    """The lines a benchmark prints about its machine."""
    fam = (f"family {d['family']} (0x{d['family']:x}) model {d['model']} (0x{d['model']:x})"
           if d["family"] is not None and d["model"] is not None else "family/model unknown")
    core = f", {d['core']}" if d["core"] else ""
    lines = [f"machine: {d['name']} ({d['vendor']}, {fam}{core}), {d['cpus']} CPUs",
             f"  vector ISA: {', '.join(d['flags']) or 'none of ' + ', '.join(ISA_FLAGS)}"
             + ("" if "avx512f" in d["flags"] else "  (no AVX-512)")]
    lines.append(f"  customcpu kernel path: {isa} ({isa_note})" if isa else f"  customcpu: {isa_note}")
    if peak:
        lines.append(f"  measured int8 peak ({peak['isa']} loop): {peak['gops']:.0f} GOPS on "
                     f"{peak['threads']} threads, {peak['gops_1t']:.0f} GOPS on 1 thread")
    return lines
