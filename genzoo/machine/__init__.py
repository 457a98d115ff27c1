"""The machine a process trains on: glibc's allocator thresholds (:mod:`.allocator`) and a run's
CPU threads with the register of genzoo processes training on CPU (:mod:`.cpu_share`)."""
