"""Pushing: D3IL's two-block pushing task re-created as a top-down pymunk simulation (docs/tasks.md).

env      pymunk dynamics of the disc pusher and the two blocks, contexts, termination (PushingEnv)
readout  mode read-out from the trajectory: which block arrived first x which zone each went to
expert   closed-loop scripted pusher with state-dependent mode preferences
plot     trajectory figure
task     PushingTask, the registry's "pushing"
"""
