"""The HTTP service (FastAPI) in front of gpu_pricer."""
