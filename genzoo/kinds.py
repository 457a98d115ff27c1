"""The names of genzoo's component kinds, without their interfaces (which need torch), so that
the registry, the command line and ``import genzoo`` stay light."""

KIND_NAMES: tuple[str, ...] = (
    "cell",
    "gate",
    "latent_group",
    "regularizer",
    "hierarchy",
    "likelihood",
    "dataset",
    "metric",
)
"""Every kind a component can be registered as; :data:`genzoo.KINDS` maps each to its interface."""
