"""The D3IL Avoiding task (spec: docs/avoiding_task.md in the shared docs).

env      dynamics, collisions, termination (AvoidingEnv)
readout  D3IL's 9-bit read-out of which of the 24 paths an episode took
expert   scripted multi-modal demonstrations
plot     trajectory figure
task     AvoidingTask, the registry's "avoiding"
"""
