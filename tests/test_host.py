"""mmcc.utils.host: what the benchmarks report about the machine."""
import os

import numpy as np
import pytest

from mmcc.utils.host import (VECTOR_FLAGS, cpu_vector_flags, process_memory,
                             reset_peak_memory)

linux = pytest.mark.skipif(
    not os.path.exists('/proc/self/status'), reason='needs /proc')


@linux
def test_cpu_vector_flags_names_exactly_the_reported_extensions():
    with open('/proc/cpuinfo') as f:
        flags = set(
            next(line for line in f if line.startswith('flags')).split())
    named = cpu_vector_flags().rsplit(':', 1)[-1].split()
    expected = [flag for flag in VECTOR_FLAGS if flag in flags]
    assert named == (expected or named)
    if not expected:
        assert 'none of' in cpu_vector_flags()


@linux
def test_process_memory_sees_an_allocation_and_its_peak():
    block = 256 * 2**20
    before = process_memory('VmRSS')
    data = np.ones(block // 8)  # touched: resident
    during = process_memory('VmRSS')
    assert during - before > 0.8 * block
    del data
    assert process_memory('VmHWM') - before > 0.8 * block
    if reset_peak_memory():
        assert process_memory('VmHWM') - before < 0.5 * block
    assert process_memory('NoSuchField') == -1
