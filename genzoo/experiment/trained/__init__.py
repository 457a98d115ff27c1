"""What users do with a trained run: score it (``genzoo evaluate``), look into its latents
(``genzoo reconstruct`` / ``genzoo interpolate``) and share it (``genzoo export``,
:func:`genzoo.load_model`)."""
