"""Running an experiment: the run matrix in this process (:mod:`.runner`), one run as a job
(:mod:`.job`), one owner per run (:mod:`.locks`), output folders (:mod:`.outputs`) and what each
run is doing (:mod:`.status`)."""
