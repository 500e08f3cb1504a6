"""Apache TVM deployment of compressed models (Relax + our own compact TIR kernels).

Importing this package sets two TVM environment variables (unless the user set them):

* ``TVM_BIND_THREADS=0``: by default TVM's CPU thread pool pins the *calling* thread to one core the first
  time it runs a parallel kernel, so everything the process did afterwards -- torch attacks on the
  deployment, a second run in the same process, whose default ``--threads`` is the number of cores this
  process may use -- ran on a single core (measured: affinity ``{0, 1}`` -> ``{0}`` after one ``suite run
  --backend tvm``).
* ``TVM_NUM_THREADS`` = the cores this process may use: TVM sizes its pool once, when it is first used, at
  ``TVM_NUM_THREADS`` workers, else half the hardware threads on x86 (it assumes hyper-threading), and
  :func:`compression.tvm_backend.runtime.set_tvm_threads` can shrink the pool but never grow it past that.
  On a 2-core machine every ``suite run`` thus ran TVM on one thread while ONNX Runtime and torch got two
  (the default run's deployment: 0.32 ms as called against 0.20 ms on two threads, bench/RESULTS.md
  section 0); the benchmarks, which set ``TVM_NUM_THREADS=2`` themselves, were not affected.

Our pool is then sized per deployment with :func:`~compression.tvm_backend.runtime.set_tvm_threads`
("share all cores", no pinning).
"""

import os

os.environ.setdefault("TVM_BIND_THREADS", "0")
os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1))
