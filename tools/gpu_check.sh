#!/usr/bin/env bash
# The checks that need a real NVIDIA GPU, in one go: the GPU test module (with
# the backend tests beside it), then the core and kernel benches; on request,
# the service bench (about 5 minutes; wrk on PATH), to measure the service's
# targets on that machine's CPUs and GPU.
# Usage: tools/gpu_check.sh DIR [tests] [core] [kernels|gpu-kernels] [service]
#        (tests, core and kernels by default)
# Logs and bench reports go to DIR; PY names the interpreter (default python3),
# which needs the project's requirements and the gpu extra (cupy, numba-cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: tools/gpu_check.sh DIR [tests] [core] [kernels|gpu-kernels] [service]}
shift
stages=${*:-tests core kernels}
py=${PY:-python3}
mkdir -p "$dir"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $py -c 'import platform, numpy, numba, cupy, gpu_pricer as gp
from numba import cuda
print("python", platform.python_version(), "numpy", numpy.__version__, "numba",
      numba.__version__, "cupy", cupy.__version__, "cuda runtime",
      cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
for name, st in gp.backends().items():
    print(f"{name}: {st.available} ({st.reason})")'
} 2>&1 | tee "$dir/gpu-device.txt"
rc=0
for stage in $stages; do
    case $stage in
        tests) $py -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_backends.py \
                   2>&1 | tee "$dir/gpu-tests.log" || rc=1 ;;
        core) $py -m bench.core --repeat 15 --out "$dir" 2>&1 | tee "$dir/gpu-core.log" || rc=1 ;;
        kernels) $py -m bench.kernels --out "$dir" 2>&1 | tee "$dir/gpu-kernels.log" || rc=1 ;;
        # the GPU backends' rows, the split and the resident table only
        gpu-kernels) $py -m bench.kernels --backends cupy,numba-cuda --no-peers --out "$dir" \
                         2>&1 | tee "$dir/gpu-kernels.log" || rc=1 ;;
        service) $py -m bench.service --out "$dir" 2>&1 | tee "$dir/gpu-service.log" || rc=1 ;;
        *) echo "unknown stage $stage" >&2; rc=2 ;;
    esac
done
exit $rc
