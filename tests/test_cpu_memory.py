"""Keeping freed CPU memory for reuse (glibc mallopt): it takes effect, can be undone, env opt-out."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from unetzoo import cpu_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc-only")
BIG = 64 << 20  # above glibc's largest mmap threshold (32 MiB): mmap-ed unless tuned


# run in a fresh process: in one that already holds a large free heap, glibc serves a big block
# from it whatever the setting, so the difference would not show
_PROBE = """
import ctypes, sys, torch
from unetzoo import cpu_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                              "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert cpu_memory.tune_cpu_allocator() and cpu_memory.cpu_allocator_tuned()
if sys.argv[1] == "undone":
    cpu_memory.tune_cpu_allocator(True)
    assert cpu_memory.tune_cpu_allocator(False) is False
before = mallinfo2().hblkhd  # bytes in mmap-ed blocks
t = torch.empty(int(sys.argv[2]) if len(sys.argv) > 2 else 64 << 20, dtype=torch.uint8)
print(mallinfo2().hblkhd - before)
"""


def _mmapped_by_a_big_tensor(setting: str, size: int = BIG) -> int:
    env = {**os.environ, cpu_memory.ENV_VAR: "default"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, setting, str(size)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.fixture
def restore_allocator():
    was = cpu_memory.cpu_allocator_tuned()
    yield
    cpu_memory.tune_cpu_allocator(was)


@glibc
def test_tuned_allocator_serves_large_tensors_from_the_heap():
    assert _mmapped_by_a_big_tensor("default") >= BIG  # glibc's default: its own mapping, unmapped on free
    assert _mmapped_by_a_big_tensor("tuned") < BIG  # from the heap, where it stays for the next tensor


@glibc
def test_undoing_the_tuning_leaves_glibcs_settled_thresholds():
    """Once set, glibc's thresholds no longer adapt; undoing the tuning sets what they settle at
    for large blocks: 4 MiB blocks from the heap (not a fresh mapping each, page-faulted in
    again on every call: the fixed 128 KiB threshold gave that), 64 MiB ones mapped and returned."""
    assert _mmapped_by_a_big_tensor("undone", 4 << 20) < 4 << 20
    assert _mmapped_by_a_big_tensor("undone") >= BIG


@glibc
def test_environment_turns_the_automatic_tuning_off(monkeypatch, restore_allocator):
    cpu_memory.tune_cpu_allocator(False)
    monkeypatch.setenv(cpu_memory.ENV_VAR, "default")
    assert cpu_memory.auto_tune_cpu_allocator() is False and not cpu_memory.cpu_allocator_tuned()
    monkeypatch.setenv(cpu_memory.ENV_VAR, "tuned")
    assert cpu_memory.auto_tune_cpu_allocator() is True and cpu_memory.cpu_allocator_tuned()
    monkeypatch.setenv(cpu_memory.ENV_VAR, "jemalloc")
    with pytest.raises(ValueError, match="UNETZOO_CPU_ALLOCATOR='jemalloc' is not understood"):
        cpu_memory.auto_tune_cpu_allocator()


@glibc
def test_fast_path_tunes_the_allocator_unless_told_not_to(restore_allocator):
    import unetzoo

    cpu_memory.tune_cpu_allocator(False)
    model = unetzoo.create("unet-classic", base_c=4).optimize_for_inference(dtype=torch.float32, tune_allocator=False)
    assert model.inference_options["cpu_allocator_tuned"] is False and not cpu_memory.cpu_allocator_tuned()
    model = unetzoo.create("unet-classic", base_c=4).optimize_for_inference(dtype=torch.float32)
    assert model.inference_options["cpu_allocator_tuned"] is True and cpu_memory.cpu_allocator_tuned()


_RELEASE_PROBE = """
import sys, psutil, torch
from unetzoo import cpu_memory

assert cpu_memory.tune_cpu_allocator()
t = torch.ones(256 << 20, dtype=torch.uint8)  # touched, so resident
del t
kept = psutil.Process().memory_info().rss
if sys.argv[1] == "release":
    assert cpu_memory.release_free_memory()
print(kept - psutil.Process().memory_info().rss)
"""


def _rss_given_back(how: str) -> int:
    proc = subprocess.run([sys.executable, "-c", _RELEASE_PROBE, how], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@glibc
def test_release_free_memory_hands_the_kept_heap_back():
    """What the benchmarks call before measuring RSS growth: a freed 256 MiB tensor stays
    resident with the tuned setting, and leaves after release_free_memory()."""
    assert _rss_given_back("keep") < 16 << 20
    assert _rss_given_back("release") > 200 << 20


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    assert cpu_memory.tune_cpu_allocator() is False
    assert cpu_memory.release_free_memory() is False
