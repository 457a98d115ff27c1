"""On a GPU: the model-level figures on CUDA, the official models at paper scale within a time
budget, and a GPU session's scripts (``smoke.sh``, ``full.sh``) with their probes."""
