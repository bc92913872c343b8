"""keep_freed_memory: freed memory reused by the next batch instead of faulted in again (glibc's malloc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from minibert.paths import allocator

GLIBC = allocator.glibc_library() is not None

# 96 blocks of 1 MiB (under a huge page, so that every page is its own fault whatever the kernel's
# transparent huge pages do) allocated and freed together, ten times, as a batch's tensors are: the page
# faults of the second pass over that loop, the first having warmed up whatever the allocator keeps. Where
# glibc's adaptive thresholds stand when the loop starts depends on what the process freed before, so the
# child first holds them where they start (blocks above 128 KiB are fresh mmaps), a state that faults every
# block in: keep_freed_memory must take the process out of it.
CHURN = f"""
import ctypes, resource, sys
import torch
from minibert.paths.allocator import keep_freed_memory
ctypes.CDLL("libc.so.6").mallopt({allocator.M_MMAP_THRESHOLD}, 128 * 1024)  # as glibc starts it, held there
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def churn():
    for _ in range(10):
        blocks = [torch.ones(2**18) for _ in range(96)]
        del blocks
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    """The faults of the churn loop in a fresh process (the setting is the whole process's): "held" at glibc's
    starting threshold, or "kept" by keep_freed_memory after that. Without any malloc setting of the
    caller's (tunables, the older variables, a preloaded allocator)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", *allocator.USER_VARIABLES)}
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; this C library has no such setting")
def test_kept_memory_is_reused_where_the_allocator_gave_it_back():
    pages = 10 * 96 * 2**20 // 4096  # every page of every block, had each been faulted in afresh
    held, kept = page_faults("held"), page_faults("kept")
    assert held > pages // 2, f"glibc faulted only {held} of {pages} pages: the loop does not show the cost"
    assert kept * 20 < held, f"{kept} page faults with freed memory kept, {held} before"


@pytest.mark.parametrize("name, value", [("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000"),
                                         ("MALLOC_MMAP_THRESHOLD_", "1000000"),
                                         ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")])
def test_the_users_own_choice_stands(monkeypatch, name, value):
    monkeypatch.setattr(allocator, "glibc_library", object)  # a library without mallopt: calling it would fail
    for variable in ("GLIBC_TUNABLES", "LD_PRELOAD", *allocator.USER_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, value)
    assert allocator.users_own_choice() is not None
    assert allocator.keep_freed_memory() is False


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.glibc_library() is None
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_encoding_commands_keep_freed_memory_on_the_cpu(minilm_dir, monkeypatch, device):
    from minibert import cli, paths
    from minibert.sentence import SentenceEncoder

    calls = []
    monkeypatch.setattr(paths, "keep_freed_memory", lambda: calls.append(1) or True)
    if device == "meta":  # a device that is not the CPU, without a GPU: the encoder says it is elsewhere
        monkeypatch.setattr(SentenceEncoder, "device", property(lambda self: torch.device("meta")))
    args = cli.build_parser().parse_args(["encode", "--model", str(minilm_dir), "hello"])
    cli.load_encoder(args)
    assert calls == ([1] if device == "cpu" else [])
