"""Reading an experiment: the YAML file with positions (:mod:`.yamlio`), its schema and the run
matrix (:mod:`.spec`), typed sections (:mod:`.typed`), merging profiles and overrides
(:mod:`.merging`) and ablations (:mod:`.ablations`)."""
