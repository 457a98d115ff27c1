"""Model level, in one process: training steps of whole NVAEs (naive cells against the
package's), their growth with depth and resolution, and the compilations ``compile: cells``
costs the official models."""
