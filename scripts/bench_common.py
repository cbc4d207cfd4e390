"""Helpers shared by the side-by-side comparison scripts (scripts/compare_*.py)."""
import platform
import subprocess


def cpu_model():
    """`lscpu`'s model name (what docs/benchmarks.md quotes), else Python's processor string."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
