"""The HTTP service (FastAPI) in front of gpu_pricer.

OpenMP's idle worker threads sleep in this process unless the environment
says otherwise (``OMP_WAIT_POLICY``, read once when Numba's parallel layer
first starts): by default they spin for a while after every parallel
kernel, and the service runs one small kernel per micro-batch, so its idle
workers spun most of the time, taking a CPU from the event loop (profiled
under `bench.service`'s single-option load on two cores).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
