"""Building blocks the component plugins share (as timm's ``timm/layers``): the vectorized ELU
(:mod:`.activations`), distributions (:mod:`.distributions`), composing components
(:mod:`.composition`) and the CPU kernels with their C++ sources (:mod:`.cpu_kernels`,
``csrc/``)."""
