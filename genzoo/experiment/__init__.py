"""Experiments as YAML: loading and validating experiment files (:mod:`.spec`), running the
run matrix (:mod:`.runner`), output folders (:mod:`.outputs`), reports (:mod:`.report`) and sample
grids (:mod:`.sampling`). The command line (:mod:`genzoo.cli`) is the main user of this package."""
