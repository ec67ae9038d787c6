"""Layer 0: helpers every layer may use (files, hashing, configuration, progress, torch state).

Nothing here imports another ``vdd_ros`` package; ``files``, ``config`` and ``progress`` import
no torch, so the runtime and the controller can use them.
"""
