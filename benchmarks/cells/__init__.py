"""Cell level: one cell's forward + backward time, memory, parameters and page faults, and the
depthwise convolution's weight gradient alone."""
