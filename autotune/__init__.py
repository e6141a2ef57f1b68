"""The autotuner (``tilekit tune``): not built yet.

Kernels already declare what it will search (``kernel.tunables``, a ``tk.Tunables``), and the ops look
their configs up through one hook each (``_config_for`` / ``tilekit.ops.set_config_provider``).
"""
