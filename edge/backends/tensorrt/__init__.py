"""Native TensorRT: what an engine is (engine.py), finding or building one (loader.py),
running it (runner.py). Nothing here imports `tensorrt` or `pycuda` at import time."""
