"""The plugin system: the registry of components (:mod:`.registry`, ``@genzoo.component``), the
hooks a plugin may implement (:mod:`.hookspecs`), finding and loading plugins with pluggy
(:mod:`.discovery`), a component named in a config (:mod:`.component_spec`) and the run as
plugins see it (:mod:`.run_info`)."""
