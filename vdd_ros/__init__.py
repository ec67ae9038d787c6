"""vdd_ros: distil diffusion policies into one-pass Gaussian mixtures of experts and serve them in ROS 2.

Packages are layers in pipeline order (docs/architecture.md); each imports only from the ones
before it: util -> data -> tasks, teacher, moe -> distill, export -> runtime -> pipeline ->
nodes -> harness -> cli. Only nodes, harness and cli import rclpy; runtime imports no torch.
"""

__version__ = "0.1.0"
