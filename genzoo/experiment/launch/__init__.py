"""Submitting the run matrix as jobs, locally or to Slurm through submitit (:mod:`.launcher`),
with the launcher's options (:mod:`.options`)."""
