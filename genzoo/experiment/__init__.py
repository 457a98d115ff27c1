"""Experiments as YAML, in four steps: reading and validating the file (:mod:`.config`),
running the matrix here or as jobs (:mod:`.run`), submitting it to a launcher (:mod:`.launch`)
and reporting (:mod:`.report`). The command line (:mod:`genzoo.cli`) is the main user of this
package."""
