"""seqtrain.memory: with freed memory kept, re-allocating a large buffer takes no new page faults."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import torch
from seqtrain import memory
if sys.argv[1] == "keep":
    assert memory.keep_freed_memory()
def most_faults_of_a_late_reallocation():
    faults = []
    for round in range(12):  # the heap settles after 4-6 rounds
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        # a step's buffers: 64 and 12 MiB, above glibc's mmap threshold
        bufs = [torch.empty(16 * 2**20), torch.empty(3 * 2**20)]
        for buf in bufs:
            buf.fill_(1.0)
        del bufs, buf
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return max(faults[-3:])
print(most_faults_of_a_late_reallocation())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keeping_freed_memory_avoids_page_faults_on_reallocation():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    pages = 64 * 2**20 // 4096
    assert faults("default") > pages // 2  # glibc mmaps the buffer afresh: every page faults, every time
    # Kept: once the heap holds free chunks that fit, a step's buffers reuse their warm pages. (Where the
    # heap's free chunks do not fit, fresh pages are still taken: torch allocates 64-byte aligned, and glibc's
    # memalign needs a little more than a freed chunk of the same size that did not merge into the top.)
    assert faults("keep") < pages // 20
