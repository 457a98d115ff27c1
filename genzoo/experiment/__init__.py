"""Experiments as YAML: loading and validating experiment files (:mod:`.spec`), running the
run matrix (:mod:`.runner`, one owner per run: :mod:`.locks`), submitting it as jobs
(:mod:`.launcher`, each job a :mod:`.job`; resources: :mod:`.launcher_config`), following it
(:mod:`.status`), output folders (:mod:`.outputs`), reports (:mod:`.report`) and sample grids
(:mod:`.sampling`). The command line (:mod:`genzoo.cli`) is the main user of this package."""
