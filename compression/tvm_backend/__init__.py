"""Apache TVM deployment of compressed models (Relax + our own compact TIR kernels).

Importing this package sets ``TVM_BIND_THREADS=0`` (unless the user set it): by default TVM's CPU thread
pool pins the *calling* thread to one core the first time it runs a parallel kernel, so everything the
process did afterwards -- torch attacks on the deployment, a second run in the same process, whose default
``--threads`` is the number of cores this process may use -- ran on a single core (measured: affinity
``{0, 1}`` -> ``{0}`` after one ``suite run --backend tvm``).  Our pool is sized with
:func:`compression.tvm_backend.runtime.set_tvm_threads` ("share all cores", no pinning) anyway.
"""

import os

os.environ.setdefault("TVM_BIND_THREADS", "0")
