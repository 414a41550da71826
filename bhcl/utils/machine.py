"""What a measurement ran on: the CPU model, the SIMD level torch dispatches to and
the torch version.

Training numerics are repeatable bit for bit on one kind of CPU but not across kinds
(oneDNN and BLAS pick kernels, and with them summation orders, by CPU model and cache
sizes), so studies that mix machines record this with every run."""
import platform

__all__ = ['cpu_model', 'machine_record']


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def machine_record() -> dict:
    """``dict(cpu=..., cpu_capability=..., torch=...)`` for a run's record."""
    import torch
    return dict(cpu=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                torch=torch.__version__)
