"""Files and values: atomic writes (:mod:`.atomic`), the layout of experiment and run folders
(:mod:`.run_layout`) and checks of configuration values (:mod:`.validation`)."""
